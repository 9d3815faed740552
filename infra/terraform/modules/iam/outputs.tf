output "role_arns" {
  description = "IRSA role ARN of each workload (pipelines, serving, mlflow, external_secrets): the eks.amazonaws.com/role-arn annotation of its service account"
  value       = { for workload, role in aws_iam_role.workload : workload => role.arn }
}
