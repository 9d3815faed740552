variable "name" {
  description = "Prefix of every role name (e.g. rrg-staging)"
  type        = string
}

variable "oidc_provider_arn" {
  description = "The cluster's IAM OIDC provider (cluster module)"
  type        = string
}

variable "oidc_issuer" {
  description = "The cluster's OIDC issuer without https:// (cluster module)"
  type        = string
}

variable "service_accounts" {
  description = "Kubernetes service account of each workload: pipelines, serving, mlflow, external_secrets (names.json)"
  type = map(object({
    namespace = string
    name      = string
  }))

  validation {
    condition     = alltrue([for k in ["pipelines", "serving", "mlflow", "external_secrets"] : contains(keys(var.service_accounts), k)])
    error_message = "service_accounts needs pipelines, serving, mlflow and external_secrets."
  }
}

variable "artifacts_bucket_arn" {
  description = "MLflow artifacts, models, packets (storage module)"
  type        = string
}

variable "data_bucket_arn" {
  description = "Training and evaluation data (storage module)"
  type        = string
}

variable "mlflow_artifacts_prefix" {
  description = "Key prefix of MLflow's artifact store in the artifacts bucket (names.json mlflow.artifacts_prefix)"
  type        = string
}

variable "kms_key_arn" {
  description = "The customer key of the buckets and secrets (storage module)"
  type        = string
}

variable "mlflow_db_resource_id" {
  description = "The MLflow database's resource id (mlflow_db module), for rds-db:connect"
  type        = string
}

variable "mlflow_db_user" {
  description = "The database user MLflow logs in as with IAM authentication (names.json mlflow.db_user)"
  type        = string
}

variable "secrets_name_prefix" {
  description = "Secrets Manager names the External Secrets operator may read: PREFIX/* (secrets module)"
  type        = string
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
