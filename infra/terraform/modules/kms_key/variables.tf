variable "description" {
  description = "What the key encrypts (shown in the KMS console)"
  type        = string
}

variable "alias" {
  description = "The key's alias, without the alias/ prefix"
  type        = string
}

variable "log_group_pattern" {
  description = "CloudWatch log groups that may use the key, as an ARN resource pattern (e.g. /aws/eks/rrg-prod/*)"
  type        = string

  validation {
    condition     = startswith(var.log_group_pattern, "/aws/") && var.log_group_pattern != "/aws/*"
    error_message = "log_group_pattern must name this stack's log groups under /aws/<service>/, not every log group."
  }
}

variable "tags" {
  description = "Tags of the key"
  type        = map(string)
  default     = {}
}
