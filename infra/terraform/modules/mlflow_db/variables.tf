variable "name" {
  description = "Prefix of every resource name (e.g. rrg-staging)"
  type        = string
}

variable "vpc_id" {
  description = "The VPC of the database"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the DB subnet group (at least two zones)"
  type        = list(string)
}

variable "client_security_groups" {
  description = "Security groups allowed to connect on 5432, by what they are (the EKS cluster security group: MLflow's pods)"
  type        = map(string)
}

variable "kms_key_arn" {
  description = "Customer key for storage, Performance Insights, log exports and the master password secret"
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL major version (minor versions upgrade automatically)"
  type        = string
  default     = "16"
}

variable "instance_class" {
  description = "RDS instance class"
  type        = string
}

variable "allocated_storage_gib" {
  description = "Initial storage; grows automatically up to max_allocated_storage_gib"
  type        = number
  default     = 50
}

variable "max_allocated_storage_gib" {
  description = "Storage autoscaling ceiling"
  type        = number
  default     = 500
}

variable "multi_az" {
  description = "A synchronous standby in another zone (prod: true)"
  type        = bool
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)"
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be 7-35: MLflow's registry (model versions, aliases, audit tags) is the record of what was served."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the database (turn off deliberately, in a separate apply, to remove it)"
  type        = bool
  default     = true
}

variable "db_name" {
  description = "MLflow's database (names.json mlflow.db_name)"
  type        = string
}

variable "master_username" {
  description = "Master user; its password is generated and kept by RDS in Secrets Manager"
  type        = string
  default     = "mlflow_admin"
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
