output "secret_names" {
  description = "Kubernetes secret name → its Secrets Manager name (the ExternalSecret's remote key)"
  value       = { for name, secret in aws_secretsmanager_secret.this : name => secret.name }
}

output "secret_arns" {
  description = "Kubernetes secret name → its Secrets Manager ARN"
  value       = { for name, secret in aws_secretsmanager_secret.this : name => secret.arn }
}
