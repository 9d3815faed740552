output "kms_key_arn" {
  description = "The customer key of the buckets, the MLflow database, the secrets and the images"
  value       = module.key.arn
}

output "artifacts_bucket" {
  description = "MLflow artifacts, pipeline outputs, models, packets"
  value       = { name = module.artifacts_bucket.name, arn = module.artifacts_bucket.arn }
}

output "data_bucket" {
  description = "Training and evaluation data (may hold PHI until de-identified)"
  value       = { name = module.data_bucket.name, arn = module.data_bucket.arn }
}

output "access_logs_bucket" {
  description = "S3 server access logs of the other buckets"
  value       = module.access_logs_bucket.name
}

output "ecr_repository_urls" {
  description = "Repository URLs by name (push REGISTRY/NAME:TAG)"
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}
