# Names follow terraform-aws-modules/eks v21 (name, kubernetes_version, endpoint_*_access, enabled_log_types).

variable "name" {
  description = "The EKS cluster's name"
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and the node groups"
  type        = string
  default     = "1.33"
}

variable "vpc_id" {
  description = "The VPC the cluster lives in"
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's CIDR: the only network allowed to reach the private API endpoint"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the control plane's ENIs and the node groups"
  type        = list(string)
}

variable "endpoint_private_access" {
  description = "Whether the API server is reachable from inside the VPC"
  type        = bool
  default     = true
}

variable "endpoint_public_access" {
  description = "Whether the API server is reachable from the internet (off: reach it through a VPN or bastion)"
  type        = bool
  default     = false
}

variable "endpoint_public_access_cidrs" {
  description = "Networks allowed to the public endpoint when endpoint_public_access is on (never 0.0.0.0/0)"
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.endpoint_public_access_cidrs, "0.0.0.0/0")
    error_message = "The Kubernetes API must not be open to the whole internet."
  }
}

variable "enabled_log_types" {
  description = "Control-plane log types sent to CloudWatch"
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

variable "cloudwatch_log_group_retention_in_days" {
  description = "How long control-plane logs are kept"
  type        = number
  default     = 365
}

variable "admin_role_arns" {
  description = "IAM roles granted cluster admin through EKS access entries (the cluster creator gets nothing implicit)"
  type        = list(string)

  validation {
    condition     = length(var.admin_role_arns) > 0
    error_message = "Name at least one admin role, or nobody can reach the cluster's API."
  }
}

variable "cpu_node_group" {
  description = "The general-purpose node group (CPU pipeline steps, MLflow, controllers)"
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 100)
  })
}

variable "gpu_node_group" {
  description = "The NVIDIA GPU node group (train step, serving), AL2023 NVIDIA AMI, tainted so only GPU pods land"
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 200) # CUDA images and model caches are large
  })
}

variable "gpu_node_label" {
  description = "Label of every GPU node; the pipeline's and serving's nodeSelector (infra/terraform/names.json)"
  type = object({
    key   = string
    value = string
  })
}

variable "gpu_taint" {
  description = "Taint of every GPU node, Kubernetes spelling of the effect (infra/terraform/names.json)"
  type = object({
    key    = string
    value  = string
    effect = string
  })

  validation {
    condition     = contains(["NoSchedule", "NoExecute", "PreferNoSchedule"], var.gpu_taint.effect)
    error_message = "gpu_taint.effect must be NoSchedule, NoExecute or PreferNoSchedule."
  }
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
