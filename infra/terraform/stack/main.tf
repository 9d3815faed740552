# One environment's AWS infrastructure, every module wired in dependency order: network → cluster →
# storage → mlflow_db → iam → secrets. Called by envs/staging and envs/prod, which hold only what differs
# (terraform.tfvars, backend.hcl): what staging tested is what prod runs. Apply order on first bring-up:
# docs/cluster.md. No provider block: the environment's root configures the provider.

locals {
  # The names the pipeline, serving and deploy/k8s use (tests/infra/test_names.py keeps them in step).
  names = jsondecode(file("${path.module}/../names.json"))

  name = "${local.names.project}-${var.environment}"
  tags = merge(var.tags, {
    Project     = local.names.project
    Environment = var.environment
    ManagedBy   = "terraform"
  })

  kubernetes_secrets = merge(local.names.pipeline_secrets, local.names.serving_secrets)
  # Under IRSA the pods need no S3 keys: the secret that carries MLFLOW_S3_ENDPOINT_URL gets S3's regional
  # endpoint and empty keys, which make boto3 fall through to the service account's web-identity role.
  s3_secret = one([for name, env_to_key in local.names.pipeline_secrets : name if contains(keys(env_to_key), "MLFLOW_S3_ENDPOINT_URL")])
  s3_secret_value = {
    for env_var, key in local.names.pipeline_secrets[local.s3_secret] :
    key => env_var == "MLFLOW_S3_ENDPOINT_URL" ? "https://s3.${var.region}.amazonaws.com" : ""
  }
  service_accounts = {
    for workload in ["pipelines", "serving", "mlflow", "external_secrets"] : workload => {
      namespace = local.names.namespaces[workload]
      name      = local.names.service_accounts[workload]
    }
  }
}

module "network" {
  source = "../modules/network"

  name               = local.name
  cidr               = var.network.vpc_cidr
  azs                = var.network.azs
  single_nat_gateway = var.network.single_nat_gateway
  cluster_name       = local.name
  tags               = local.tags
}

module "cluster" {
  source = "../modules/cluster"

  name               = local.name
  kubernetes_version = var.cluster.kubernetes_version
  vpc_id             = module.network.vpc_id
  vpc_cidr           = module.network.vpc_cidr
  subnet_ids         = module.network.private_subnet_ids
  admin_role_arns    = var.cluster.admin_role_arns
  cpu_node_group     = var.cluster.cpu_node_group
  gpu_node_group     = var.cluster.gpu_node_group
  gpu_node_label     = local.names.gpu.node_label
  gpu_taint          = local.names.gpu.taint
  tags               = local.tags
}

module "storage" {
  source = "../modules/storage"

  name             = local.name
  ecr_repositories = [local.names.images.components]
  tags             = local.tags
}

module "mlflow_db" {
  source = "../modules/mlflow_db"

  name                   = local.name
  vpc_id                 = module.network.vpc_id
  subnet_ids             = module.network.private_subnet_ids
  client_security_groups = { eks-cluster = module.cluster.cluster_security_group_id }
  kms_key_arn            = module.storage.kms_key_arn
  instance_class         = var.mlflow_db.instance_class
  multi_az               = var.mlflow_db.multi_az
  backup_retention_days  = var.mlflow_db.backup_retention_days
  db_name                = local.names.mlflow.db_name
  tags                   = local.tags
}

module "iam" {
  source = "../modules/iam"

  name                    = local.name
  oidc_provider_arn       = module.cluster.oidc_provider_arn
  oidc_issuer             = module.cluster.oidc_issuer
  service_accounts        = local.service_accounts
  artifacts_bucket_arn    = module.storage.artifacts_bucket.arn
  data_bucket_arn         = module.storage.data_bucket.arn
  mlflow_artifacts_prefix = local.names.mlflow.artifacts_prefix
  kms_key_arn             = module.storage.kms_key_arn
  mlflow_db_resource_id   = module.mlflow_db.resource_id
  mlflow_db_user          = local.names.mlflow.db_user
  secrets_name_prefix     = "${local.names.project}/${var.environment}"
  tags                    = local.tags
}

module "secrets" {
  source = "../modules/secrets"

  name_prefix    = "${local.names.project}/${var.environment}"
  secrets        = { for name, env_to_key in local.kubernetes_secrets : name => sort(values(env_to_key)) }
  kms_key_arn    = module.storage.kms_key_arn
  initial_values = { (local.s3_secret) = local.s3_secret_value }
  tags           = local.tags
}
