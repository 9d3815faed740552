# terraform init -backend-config=backend.hcl   (the state bucket is made once, by hand: docs/cluster.md)
bucket       = "rrg-terraform-state-111122223333"
key          = "prod/terraform.tfstate"
region       = "eu-central-1"
encrypt      = true
use_lockfile = true
