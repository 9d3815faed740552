variable "name" {
  description = "The bucket's name (globally unique)"
  type        = string
}

variable "kms_key_arn" {
  description = "Customer key for default encryption (SSE-KMS with a bucket key); null only for the access-log bucket (SSE-S3)"
  type        = string
  default     = null
}

variable "logging" {
  description = "Where S3 server access logs go (prefix: this bucket's name); null only for the access-log bucket"
  type = object({
    target_bucket = string
  })
  default = null
}

variable "access_logs_from_bucket_arns" {
  description = "On the access-log bucket: the buckets whose server access logs S3 may deliver here"
  type        = list(string)
  default     = []
}

variable "noncurrent_days" {
  description = "Days an overwritten or deleted object version is kept"
  type        = number
}

variable "expiration_days" {
  description = "Days after which current objects expire (access logs); null keeps them"
  type        = number
  default     = null
}

variable "tags" {
  description = "Tags of the bucket"
  type        = map(string)
  default     = {}
}
