variable "name_prefix" {
  description = "Secrets Manager name prefix, e.g. rrg/staging: each secret is PREFIX/<Kubernetes secret name>"
  type        = string
}

variable "secrets" {
  description = "Kubernetes secret name → the keys it holds (names.json pipeline_secrets and serving_secrets)"
  type        = map(list(string))
}

variable "initial_values" {
  description = "Values Terraform may write because they are not secret (e.g. S3's endpoint with empty keys under IRSA); every other secret is filled by an operator"
  type        = map(map(string))
  default     = {}

  validation {
    condition     = alltrue([for name, value in var.initial_values : alltrue([for k in keys(value) : !can(regex("(?i)password|token", k)) || value[k] == ""])])
    error_message = "initial_values must not carry passwords or tokens: put those in Secrets Manager by hand (docs/cluster.md)."
  }

  validation {
    condition     = alltrue([for name, value in var.initial_values : contains(keys(var.secrets), name) && toset(keys(value)) == toset(var.secrets[name])])
    error_message = "initial_values: every entry must name a secret of var.secrets and give exactly its keys."
  }
}

variable "kms_key_arn" {
  description = "The customer key that encrypts the secrets (storage module)"
  type        = string
}

variable "recovery_window_in_days" {
  description = "Days a deleted secret can be restored"
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
