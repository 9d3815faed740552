variable "name" {
  description = "Prefix of every resource name (e.g. rrg-staging)"
  type        = string
}

variable "cidr" {
  description = "The VPC's IPv4 CIDR block"
  type        = string
}

variable "azs" {
  description = "Availability zones; one private and one public subnet in each"
  type        = list(string)

  validation {
    condition     = length(var.azs) >= 2
    error_message = "EKS and a multi-AZ RDS need subnets in at least two availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, staging) instead of one per zone (prod)"
  type        = bool
  default     = false
}

variable "cluster_name" {
  description = "The EKS cluster's name, for the subnet discovery tags of the AWS load balancer controller"
  type        = string
}

variable "flow_log_retention_days" {
  description = "How long VPC flow logs are kept in CloudWatch"
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
