# prod: the settings ../../stack takes (stack/variables.tf); the .tf files here are the same as staging's.
environment = "prod"
region      = "eu-central-1"

network = {
  azs                = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
  vpc_cidr           = "10.41.0.0/16"
  single_nat_gateway = false # one NAT per zone: a zone outage does not cut the others' egress
}

cluster = {
  kubernetes_version = "1.33"
  # Replace with the platform team's and the CI deployer's roles.
  admin_role_arns = ["arn:aws:iam::111122223333:role/rrg-platform-admin"]

  cpu_node_group = {
    instance_types = ["m6i.2xlarge"]
    min_size       = 3
    max_size       = 6
    desired_size   = 3
  }

  gpu_node_group = {
    instance_types = ["g5.2xlarge"]
    min_size       = 2 # two serving replicas on separate nodes at all times
    max_size       = 8 # up to 6 serving replicas (HPA) and the monthly train step
    desired_size   = 2
  }
}

mlflow_db = {
  instance_class        = "db.m7g.large"
  multi_az              = true
  backup_retention_days = 35
}
