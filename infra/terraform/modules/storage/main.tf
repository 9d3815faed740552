# S3 for artifacts and data: a customer KMS key with rotation, versioning, server access logging, lifecycle
# rules, a TLS-only bucket policy, public access blocked, ACLs disabled, events to EventBridge (./bucket).
# The access-log bucket is the one exception to KMS: S3 server access logging delivers only to SSE-S3 buckets.
# Also the ECR repositories of the project's images, encrypted with the same key.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
}

# --------------------------------------------------------------------------- the key

# Written inline: a key policy is a resource policy in which "*" means this key (checkov's KMS checks apply).
resource "aws_kms_key" "data" {
  description             = "${var.name}: S3 artifacts and data, MLflow database, secrets, images"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # Use of the key is granted by IAM policies (iam module) and grants (RDS, Secrets Manager, ECR).
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # The MLflow database's log exports (mlflow_db pre-creates their log groups with this key).
        Sid       = "CloudWatchLogsEncrypts"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/rds/instance/${var.name}-*"
          }
        }
      },
    ]
  })
  tags = var.tags
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}-data"
  target_key_id = aws_kms_key.data.key_id
}

# --------------------------------------------------------------------------- artifacts and data buckets

module "artifacts_bucket" {
  source = "./bucket"

  name               = "${var.name}-artifacts-${local.account_id}"
  kms_key_arn        = aws_kms_key.data.arn
  access_logs_bucket = aws_s3_bucket.access_logs.id
  noncurrent_days    = var.artifacts_noncurrent_days
  tags               = var.tags
}

module "data_bucket" {
  source = "./bucket"

  name               = "${var.name}-data-${local.account_id}"
  kms_key_arn        = aws_kms_key.data.arn
  access_logs_bucket = aws_s3_bucket.access_logs.id
  noncurrent_days    = var.data_noncurrent_days
  tags               = var.tags
}

# --------------------------------------------------------------------------- access-log bucket

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would log every log delivery
  #checkov:skip=CKV_AWS_144:No cross-region replication: the logs stay in the region of the data they describe
  #checkov:skip=CKV_AWS_145:S3 server access logging delivers only to SSE-S3 (AES256) buckets, not SSE-KMS
  bucket = "${var.name}-access-logs-${local.account_id}"
  tags   = merge(var.tags, { Name = "${var.name}-access-logs" })
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

resource "aws_s3_bucket_notification" "access_logs" {
  bucket      = aws_s3_bucket.access_logs.id
  eventbridge = true
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3ServerAccessLogsDeliver"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [module.artifacts_bucket.arn, module.data_bucket.arn]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
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
    kms_key         = aws_kms_key.data.arn
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
