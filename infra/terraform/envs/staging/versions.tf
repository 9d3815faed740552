terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.95, < 7.0"
    }
  }

  # Partial configuration: terraform init -backend-config=backend.hcl (bucket, key, region; S3-native locking).
  backend "s3" {}
}
