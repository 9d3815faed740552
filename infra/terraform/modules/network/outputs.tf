output "vpc_id" {
  description = "The VPC's id"
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The VPC's IPv4 CIDR block"
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets (EKS nodes, the control plane's ENIs, RDS), one per zone"
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets (NAT gateways, internet-facing load balancers), one per zone"
  value       = aws_subnet.public[*].id
}

output "flow_log_group" {
  description = "CloudWatch log group of the VPC flow logs"
  value       = aws_cloudwatch_log_group.flow_logs.name
}
