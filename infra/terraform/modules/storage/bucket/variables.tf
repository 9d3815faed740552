variable "name" {
  description = "The bucket's name (globally unique)"
  type        = string
}

variable "kms_key_arn" {
  description = "Customer key for default encryption (SSE-KMS with a bucket key)"
  type        = string
}

variable "access_logs_bucket" {
  description = "Target bucket of S3 server access logs (prefix: this bucket's name)"
  type        = string
}

variable "noncurrent_days" {
  description = "Days an overwritten or deleted object version is kept"
  type        = number
}

variable "tags" {
  description = "Tags of the bucket"
  type        = map(string)
  default     = {}
}
