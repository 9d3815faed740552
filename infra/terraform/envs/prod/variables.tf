variable "environment" {
  description = "staging or prod: part of every name (rrg-<environment>)"
  type        = string

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "region" {
  description = "AWS region of everything (clinical data does not leave it)"
  type        = string
}

variable "azs" {
  description = "Availability zones (at least two)"
  type        = list(string)
}

variable "vpc_cidr" {
  description = "The VPC's CIDR block"
  type        = string
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per zone"
  type        = bool
}

variable "kubernetes_version" {
  description = "EKS Kubernetes minor version"
  type        = string
}

variable "admin_role_arns" {
  description = "IAM roles with cluster-admin access entries (platform team, CI deployer)"
  type        = list(string)
}

variable "cpu_node_group" {
  description = "CPU node group sizes and instance types"
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
  })
}

variable "gpu_node_group" {
  description = "GPU node group sizes and instance types (min 0: nodes exist only while GPU pods wait)"
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
  })
}

variable "mlflow_db_instance_class" {
  description = "RDS instance class of MLflow's database"
  type        = string
}

variable "mlflow_db_multi_az" {
  description = "A standby of MLflow's database in another zone"
  type        = bool
}

variable "mlflow_db_backup_retention_days" {
  description = "Days of automated backups of MLflow's database"
  type        = number
}

variable "tags" {
  description = "Extra tags (cost centre, data classification)"
  type        = map(string)
  default     = {}
}
