output "cluster_name" {
  description = "aws eks update-kubeconfig --name <this> --region <region>"
  value       = module.cluster.cluster_name
}

output "cluster_endpoint" {
  description = "The private Kubernetes API endpoint"
  value       = module.cluster.cluster_endpoint
}

output "image_registry" {
  description = "--image-registry of rrg pipeline compile/schedule, and the kustomize image name prefix"
  value       = dirname(module.storage.ecr_repository_urls[local.names.images.components])
}

output "workload_role_arns" {
  description = "IRSA role of each workload: the eks.amazonaws.com/role-arn annotations in deploy/k8s/overlays"
  value       = module.iam.role_arns
}

output "artifacts_bucket" {
  description = "RRG_MLFLOW_ARTIFACTS=s3://<this>/mlflow for the MLflow server"
  value       = module.storage.artifacts_bucket.name
}

output "data_bucket" {
  description = "Training data bucket"
  value       = module.storage.data_bucket.name
}

output "mlflow_db_address" {
  description = "MLflow's backend store host (PostgreSQL, IAM auth, SSL)"
  value       = module.mlflow_db.address
}

output "secret_names" {
  description = "Kubernetes secret → Secrets Manager name (remote keys of the ExternalSecrets)"
  value       = module.secrets.secret_names
}

output "tags" {
  description = "The tags of every resource (Project, Environment, ManagedBy and the extra tags): the provider's default_tags"
  value       = local.tags
}
