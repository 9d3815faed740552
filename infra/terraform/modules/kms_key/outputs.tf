output "arn" {
  description = "The key's ARN (what encryption settings and IAM policies name)"
  value       = aws_kms_key.this.arn
}
