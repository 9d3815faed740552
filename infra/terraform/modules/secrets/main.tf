# Secrets Manager entries for the Kubernetes secrets the pipeline and serving read (names.json): one JSON
# secret per Kubernetes secret, keys as the pods expect them. The External Secrets operator copies them
# into the cluster (deploy/k8s/base/external-secrets.yaml). Terraform writes a value only where nothing in it
# is secret (initial_values); passwords and tokens are put in by an operator, so they never enter state.

resource "aws_secretsmanager_secret" "this" {
  for_each = var.secrets
  #checkov:skip=CKV2_AWS_57:No rotation Lambda exists for MLflow basic-auth users or API tokens; they are rotated by the runbook in docs/cluster.md, and s3-credentials holds no key under IRSA

  name                    = "${var.name_prefix}/${each.key}"
  description             = "Kubernetes secret ${each.key}: keys ${join(", ", each.value)}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.recovery_window_in_days
  tags                    = merge(var.tags, { "kubernetes-secret" = each.key })
}

resource "aws_secretsmanager_secret_version" "initial" {
  for_each = var.initial_values

  secret_id     = aws_secretsmanager_secret.this[each.key].id
  secret_string = jsonencode(each.value)

  lifecycle {
    ignore_changes = [secret_string] # an operator may replace the value; Terraform does not put it back
  }
}
