variable "environment" {
  description = "staging or prod: part of every name (rrg-<environment>)"
  type        = string

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "region" {
  description = "AWS region of everything (clinical data does not leave it); the environment root gives its provider the same"
  type        = string
}

variable "network" {
  description = "The VPC: availability zones (at least two), CIDR block, one NAT gateway for all zones or one per zone"
  type = object({
    azs                = list(string)
    vpc_cidr           = string
    single_nat_gateway = bool
  })
}

variable "cluster" {
  description = "EKS: Kubernetes minor version, cluster-admin roles (platform team, CI deployer), CPU and GPU node groups (sizes, instance types; the GPU group's min 0 means nodes exist only while GPU pods wait; typed by modules/cluster)"
  type = object({
    kubernetes_version = string
    admin_role_arns    = list(string)
    cpu_node_group     = any
    gpu_node_group     = any
  })
}

variable "mlflow_db" {
  description = "MLflow's RDS database: instance class, a standby in another zone, days of automated backups"
  type = object({
    instance_class        = string
    multi_az              = bool
    backup_retention_days = number
  })
}

variable "tags" {
  description = "Extra tags (cost centre, data classification)"
  type        = map(string)
  default     = {}
}
