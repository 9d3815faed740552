output "address" {
  description = "Host name of the database"
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the database"
  value       = aws_db_instance.this.port
}

output "db_name" {
  description = "MLflow's database"
  value       = aws_db_instance.this.db_name
}

output "resource_id" {
  description = "The DB instance's resource id (rds-db:connect ARNs for IAM authentication)"
  value       = aws_db_instance.this.resource_id
}

output "security_group_id" {
  description = "The database's security group"
  value       = aws_security_group.db.id
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret RDS keeps the master password in (break-glass only; MLflow uses IAM auth)"
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}
