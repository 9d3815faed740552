# staging: the settings ../../stack takes (stack/variables.tf); the .tf files here are the same as prod's.
environment = "staging"
region      = "eu-central-1"

network = {
  azs                = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
  vpc_cidr           = "10.40.0.0/16"
  single_nat_gateway = true # one NAT for all zones: staging tolerates a zone outage
}

cluster = {
  kubernetes_version = "1.33"
  # Replace with the platform team's and the CI deployer's roles.
  admin_role_arns = ["arn:aws:iam::111122223333:role/rrg-platform-admin"]

  cpu_node_group = {
    instance_types = ["m6i.xlarge"]
    min_size       = 2
    max_size       = 4
    desired_size   = 2
  }

  gpu_node_group = {
    instance_types = ["g5.xlarge"] # one A10G each: the monthly train step and up to two serving replicas
    min_size       = 0
    max_size       = 3
    desired_size   = 0
  }
}

mlflow_db = {
  instance_class        = "db.t4g.medium"
  multi_az              = false # single zone in staging; prod is multi-AZ (tests/infra checks it)
  backup_retention_days = 7
}
