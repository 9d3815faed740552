output "cluster_name" {
  description = "The EKS cluster's name"
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "The API server's (private) endpoint"
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the API server"
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_security_group_id" {
  description = "The security group EKS made for the control plane and the managed node groups"
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "The IAM OIDC provider of the cluster (IRSA trust policies)"
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer" {
  description = "The cluster's OIDC issuer without https:// (the prefix of IRSA condition keys)"
  value       = local.oidc_issuer
}

output "kms_key_arn" {
  description = "The key that encrypts Kubernetes secrets and the control-plane logs"
  value       = module.key.arn
}

output "gpu_node_group_name" {
  description = "The GPU node group's name"
  value       = aws_eks_node_group.gpu.node_group_name
}
