# The environment's root: its state (backend.hcl), the provider, and ../../stack with its settings
# (terraform.tfvars). Nothing else lives here: every resource is in the stack, so what staging ran is what prod
# runs. Apply order on first bring-up: docs/cluster.md.

provider "aws" {
  region = var.region

  default_tags {
    tags = module.stack.tags
  }
}

module "stack" {
  source = "../../stack"

  environment = var.environment
  region      = var.region
  network     = var.network
  cluster     = var.cluster
  mlflow_db   = var.mlflow_db
  tags        = var.tags
}
