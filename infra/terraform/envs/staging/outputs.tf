# The stack's outputs, for `terraform output` in this directory (docs/cluster.md).

output "cluster_name" {
  description = "aws eks update-kubeconfig --name <this> --region <region>"
  value       = module.stack.cluster_name
}

output "cluster_endpoint" {
  description = "The private Kubernetes API endpoint"
  value       = module.stack.cluster_endpoint
}

output "image_registry" {
  description = "--image-registry of rrg pipeline compile/schedule, and the kustomize image name prefix"
  value       = module.stack.image_registry
}

output "workload_role_arns" {
  description = "IRSA role of each workload: the eks.amazonaws.com/role-arn annotations in deploy/k8s/overlays"
  value       = module.stack.workload_role_arns
}

output "artifacts_bucket" {
  description = "RRG_MLFLOW_ARTIFACTS=s3://<this>/mlflow for the MLflow server"
  value       = module.stack.artifacts_bucket
}

output "data_bucket" {
  description = "Training data bucket"
  value       = module.stack.data_bucket
}

output "mlflow_db_address" {
  description = "MLflow's backend store host (PostgreSQL, IAM auth, SSL)"
  value       = module.stack.mlflow_db_address
}

output "secret_names" {
  description = "Kubernetes secret → Secrets Manager name (remote keys of the ExternalSecrets)"
  value       = module.stack.secret_names
}
