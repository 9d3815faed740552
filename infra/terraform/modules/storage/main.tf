# S3 for artifacts and data: a customer KMS key with rotation (../kms_key); versioning, server access logging,
# lifecycle rules, a TLS-only bucket policy, public access blocked, ACLs disabled, events to EventBridge
# (./bucket, also for the access-log bucket, the one exception to KMS: S3 server access logging delivers only to
# SSE-S3 buckets). Also the ECR repositories of the project's images, encrypted with the same key.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}

# --------------------------------------------------------------------------- the key

# Use of the key is granted by IAM policies (iam module) and grants (RDS, Secrets Manager, ECR); CloudWatch Logs
# may use it for the MLflow database's log exports (mlflow_db pre-creates their log groups with this key).
module "key" {
  source = "../kms_key"

  description       = "${var.name}: S3 artifacts and data, MLflow database, secrets, images"
  alias             = "${var.name}-data"
  log_group_pattern = "/aws/rds/instance/${var.name}-*"
  tags              = var.tags
}

# --------------------------------------------------------------------------- buckets (./bucket)

locals {
  bucket_names = {
    artifacts   = "${var.name}-artifacts-${local.account_id}"
    data        = "${var.name}-data-${local.account_id}"
    access_logs = "${var.name}-access-logs-${local.account_id}"
  }
}

module "artifacts_bucket" {
  source = "./bucket"

  name            = local.bucket_names.artifacts
  kms_key_arn     = module.key.arn
  logging         = { target_bucket = module.access_logs_bucket.name }
  noncurrent_days = var.artifacts_noncurrent_days
  tags            = var.tags
}

module "data_bucket" {
  source = "./bucket"

  name            = local.bucket_names.data
  kms_key_arn     = module.key.arn
  logging         = { target_bucket = module.access_logs_bucket.name }
  noncurrent_days = var.data_noncurrent_days
  tags            = var.tags
}

# The server access logs of the two buckets above: SSE-S3, not logged itself, current logs expire.
module "access_logs_bucket" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would log every log delivery
  #checkov:skip=CKV_AWS_145:S3 server access logging delivers only to SSE-S3 (AES256) buckets, not SSE-KMS
  source = "./bucket"

  name                         = local.bucket_names.access_logs
  access_logs_from_bucket_arns = [for bucket in ["artifacts", "data"] : "arn:${local.partition}:s3:::${local.bucket_names[bucket]}"]
  expiration_days              = var.access_log_days
  noncurrent_days              = 30
  tags                         = var.tags
}

# --------------------------------------------------------------------------- container images

resource "aws_ecr_repository" "this" {
  for_each = toset(var.ecr_repositories)

  # One namespace per environment: --image-registry ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME.
  # Immutable tags: a version tag always means the same image (the audit trail of what ran).
  name                 = "${var.name}/${each.value}"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.key.arn
  }

  tags = var.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each = aws_ecr_repository.this

  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Drop untagged images after 14 days"
      selection    = { tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 14 }
      action       = { type = "expire" }
    }]
  })
}
