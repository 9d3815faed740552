# One IAM role per workload, assumed only by that workload's Kubernetes service account (IRSA), each with
# the least it needs:
#   pipelines         read data, read/write artifacts (MLflow artifacts are written by the client, to S3)
#   serving           read artifacts (the champion model's files)
#   mlflow            read/write MLflow's artifact prefix (proxied artifacts, gc), log in to its database
#   external_secrets  read this environment's Secrets Manager entries (synced into Kubernetes secrets)

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  policies = {
    pipelines        = data.aws_iam_policy_document.pipelines.json
    serving          = data.aws_iam_policy_document.serving.json
    mlflow           = data.aws_iam_policy_document.mlflow.json
    external_secrets = data.aws_iam_policy_document.external_secrets.json
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = var.service_accounts

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.name}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "workload" {
  for_each = var.service_accounts

  name                 = "${var.name}-${replace(each.key, "_", "-")}"
  description          = "IRSA: ${each.value.namespace}/${each.value.name}"
  assume_role_policy   = data.aws_iam_policy_document.assume[each.key].json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "workload" {
  for_each = var.service_accounts

  name   = "least-privilege"
  role   = aws_iam_role.workload[each.key].id
  policy = local.policies[each.key]
}

# --------------------------------------------------------------------------- policies

data "aws_iam_policy_document" "pipelines" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.data_bucket_arn, var.artifacts_bucket_arn]
  }
  statement {
    sid       = "ReadData"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${var.data_bucket_arn}/*"]
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.artifacts_bucket_arn}/*"]
  }
  statement {
    sid       = "UseTheKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "serving" {
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.artifacts_bucket_arn]
  }
  statement {
    sid       = "ReadArtifacts"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${var.artifacts_bucket_arn}/${var.mlflow_artifacts_prefix}/*"]
  }
  statement {
    sid       = "DecryptThroughS3"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "mlflow" {
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.artifacts_bucket_arn]
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.artifacts_bucket_arn}/${var.mlflow_artifacts_prefix}/*"]
  }
  statement {
    sid       = "UseTheKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "ConnectToTheDatabase"
    actions   = ["rds-db:connect"]
    resources = ["arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${var.mlflow_db_resource_id}/${var.mlflow_db_user}"]
  }
}

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid       = "ReadThisEnvironmentsSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "secretsmanager:ListSecretVersionIds"]
    resources = ["arn:${local.partition}:secretsmanager:${local.region}:${local.account_id}:secret:${var.secrets_name_prefix}/*"]
  }
  statement {
    sid       = "DecryptThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}
