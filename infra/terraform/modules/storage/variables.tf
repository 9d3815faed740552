variable "name" {
  description = "Prefix of every resource name (e.g. rrg-staging); bucket names add the account id to be unique"
  type        = string
}

variable "ecr_repositories" {
  description = "ECR repositories for the project's images (names.json images)"
  type        = list(string)
}

variable "artifacts_noncurrent_days" {
  description = "Days an overwritten or deleted artifact version (MLflow artifacts, models, packets) is kept"
  type        = number
  default     = 90
}

variable "data_noncurrent_days" {
  description = "Days an overwritten or deleted training-data object version is kept"
  type        = number
  default     = 365
}

variable "access_log_days" {
  description = "Days S3 server access logs are kept"
  type        = number
  default     = 400
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
