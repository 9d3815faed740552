# Managed node groups on Amazon Linux 2023: a CPU group for everything, and an NVIDIA GPU group
# (AL2023_x86_64_NVIDIA: driver and container toolkit in the AMI) carrying the label and taint that the
# pipeline's train step and the serving Deployment select and tolerate (names.json).

locals {
  # Kubernetes spells taint effects NoSchedule; the EKS API NO_SCHEDULE.
  eks_taint_effect = {
    NoSchedule       = "NO_SCHEDULE"
    NoExecute        = "NO_EXECUTE"
    PreferNoSchedule = "PREFER_NO_SCHEDULE"
  }
  node_groups = {
    cpu = merge(var.cpu_node_group, { ami_type = "AL2023_x86_64_STANDARD" })
    gpu = merge(var.gpu_node_group, { ami_type = "AL2023_x86_64_NVIDIA" })
  }
}

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
  tags               = var.tags
}

# The minimum a node needs: join the cluster and pull images (the CNI's rights are on its IRSA role).
resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset(["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly"])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

resource "aws_launch_template" "node" {
  for_each = local.node_groups

  name_prefix            = "${var.name}-${each.key}-"
  description            = "${var.name} ${each.key} nodes: IMDSv2 only, encrypted root volume"
  update_default_version = true

  # IMDSv2 with a hop limit of 1: pods cannot reach the instance role; they use IRSA.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = each.value.disk_size_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-${each.key}" })
  }

  tags = var.tags
}

resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-cpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  version         = var.kubernetes_version
  ami_type        = local.node_groups.cpu.ami_type
  instance_types  = var.cpu_node_group.instance_types
  capacity_type   = "ON_DEMAND"

  launch_template {
    id      = aws_launch_template.node["cpu"].id
    version = aws_launch_template.node["cpu"].latest_version
  }

  scaling_config {
    min_size     = var.cpu_node_group.min_size
    max_size     = var.cpu_node_group.max_size
    desired_size = var.cpu_node_group.desired_size
  }

  update_config {
    max_unavailable_percentage = 33
  }

  labels = { "node-pool" = "cpu" }
  tags   = var.tags

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size] # the cluster autoscaler owns it after creation
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_eks_addon.vpc_cni]
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-gpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  version         = var.kubernetes_version
  ami_type        = local.node_groups.gpu.ami_type
  instance_types  = var.gpu_node_group.instance_types
  capacity_type   = "ON_DEMAND"

  launch_template {
    id      = aws_launch_template.node["gpu"].id
    version = aws_launch_template.node["gpu"].latest_version
  }

  scaling_config {
    min_size     = var.gpu_node_group.min_size
    max_size     = var.gpu_node_group.max_size
    desired_size = var.gpu_node_group.desired_size
  }

  update_config {
    max_unavailable = 1
  }

  labels = {
    (var.gpu_node_label.key) = var.gpu_node_label.value
    "node-pool"              = "gpu"
  }

  # Only pods that tolerate it (the train step, serving) land on the expensive nodes.
  taint {
    key    = var.gpu_taint.key
    value  = var.gpu_taint.value
    effect = local.eks_taint_effect[var.gpu_taint.effect]
  }

  tags = var.tags

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_eks_addon.vpc_cni]
}
