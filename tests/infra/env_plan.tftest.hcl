# `terraform test` of one environment root: tests/infra/test_terraform.py copies this file into a copy of
# infra/terraform/envs/<env>/tests/ and runs it there, with that environment's terraform.tfvars. A full plan
# against a mocked AWS provider (offline, no account): it proves what `terraform validate` cannot, that the
# tfvars fit the stack's types and validations, that every count and for_each is known when planning an empty
# account, and that the provider's default_tags may come from the stack.

mock_provider "aws" {
  # The provider checks these values while planning; its random mock strings would not pass.
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
}

run "plan_an_empty_account" {
  command = plan

  assert {
    condition     = output.cluster_name == "${jsondecode(file("../../names.json")).project}-${var.environment}"
    error_message = "The cluster is not named <project>-<environment> (names.json, terraform.tfvars)."
  }

  assert {
    condition = length(output.secret_names) > 0 && alltrue([
      for kubernetes_name, name in output.secret_names :
      name == "${jsondecode(file("../../names.json")).project}/${var.environment}/${kubernetes_name}"
    ])
    error_message = "Secrets Manager entries are not named <project>/<environment>/<Kubernetes secret>."
  }
}
