# What terraform.tfvars sets, handed to ../../stack unchanged: the stack's variables.tf describes, types and
# checks them (a root must declare its inputs; typing them here again would be a second copy to keep in step).

variable "environment" {
  description = "staging or prod (stack/variables.tf)"
  type        = string
}

variable "region" {
  description = "AWS region of everything (stack/variables.tf)"
  type        = string
}

variable "network" {
  description = "azs, vpc_cidr, single_nat_gateway (stack/variables.tf)"
  type        = any
}

variable "cluster" {
  description = "kubernetes_version, admin_role_arns, cpu_node_group, gpu_node_group (stack/variables.tf)"
  type        = any
}

variable "mlflow_db" {
  description = "instance_class, multi_az, backup_retention_days (stack/variables.tf)"
  type        = any
}

variable "tags" {
  description = "Extra tags (stack/variables.tf)"
  type        = map(string)
  default     = {}
}
