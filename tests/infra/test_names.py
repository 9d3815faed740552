"""One source of truth: infra/terraform/names.json holds the names that Terraform, deploy/k8s and the Python code
must agree on. These tests fail when any of them drifts: the compiled Kubeflow pipeline (GPU label, taint,
accelerator, secrets, image), the serving code (port, probes, metrics, environment variables), the CLI
(registered model name), the Terraform that creates the nodes, secrets, roles and repositories, and the
manifests that use them."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml
from infra_layout import ENVIRONMENTS, REPO, find, one

from model_core.config import ServingConfig, load_config
from pipelines.cluster import CUDA_TAG_SUFFIX, compile_pipeline, component_image
from pipelines.training import GPU_NODE_LABEL, GPU_TOLERATION, SECRETS
from rrg.cli import build_parser

REGISTRY = "111122223333.dkr.ecr.eu-central-1.amazonaws.com/rrg-prod"


def serving_sources() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "serving").rglob("*.py")))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    """The cluster pipeline as Kubeflow would run it: (pipeline spec, Kubernetes platform spec)."""
    path = compile_pipeline(tmp_path_factory.mktemp("ir") / "pipeline.yaml", REGISTRY)
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


# --------------------------------------------------------------------------- the pipeline

def test_gpu_node_label_and_taint_match_the_pipeline(names, compiled):
    spec, k8s = compiled
    label, taint = names["gpu"]["node_label"], names["gpu"]["taint"]
    assert (label["key"], label["value"]) == GPU_NODE_LABEL
    assert (taint["key"], taint["effect"]) == (GPU_TOLERATION["key"], GPU_TOLERATION["effect"])
    assert GPU_TOLERATION["operator"] == "Exists" or GPU_TOLERATION.get("value") == taint["value"]
    train = k8s["exec-train"]
    assert train["nodeSelector"]["labels"] == {label["key"]: label["value"]}
    assert [(t["key"], t["effect"]) for t in train["tolerations"]] == [(taint["key"], taint["effect"])]
    accelerator = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == names["gpu"]["resource"]


def test_pipeline_secrets_match_the_names_file(names, compiled):
    assert names["pipeline_secrets"] == SECRETS
    used = {}
    for executor in compiled[1].values():
        for secret in executor.get("secretAsEnv", []):
            used.setdefault(secret["secretName"], {}).update({k["envVar"]: k["secretKey"] for k in secret["keyToEnv"]})
    assert used == names["pipeline_secrets"]


def test_component_image_name_matches_the_ecr_repository(names, compiled, hcl):
    assert inspect.signature(component_image).parameters["name"].default == names["images"]["components"]
    images = {e["container"]["image"] for e in compiled[0]["deploymentSpec"]["executors"].values()}
    assert {i.rsplit(":", 1)[0] for i in images} == {f"{REGISTRY}/{names['images']['components']}"}
    storage = next(body for block in hcl["infra/terraform/stack/main.tf"]["module"]
                   for name, body in block.items() if name == "storage")
    assert storage["ecr_repositories"] == ["${local.names.images.components}"]


def test_train_runs_the_cuda_tag_and_every_other_step_the_cpu_tag(names, compiled):
    """The image per step: the `-cuda` build (docker/Dockerfile.cuda) on the GPU nodes, the CPU build elsewhere;
    the same tags that docs/cluster.md pushes and the serving overlays run."""
    assert CUDA_TAG_SUFFIX == names["images"]["cuda_tag_suffix"]
    images = {name: e["container"]["image"] for name, e in compiled[0]["deploymentSpec"]["executors"].items()}
    cpu = component_image(REGISTRY)
    assert images.pop("exec-train") == f"{cpu}{names['images']['cuda_tag_suffix']}"
    assert set(images.values()) == {cpu}
    gpu_steps = {name for name, e in compiled[1].items() if "nodeSelector" in e}
    assert gpu_steps == {"exec-train"}, "only the step in the CUDA image is scheduled on the GPU nodes"


def test_registered_model_name_matches_the_cli(names):
    args = build_parser().parse_args(["pipeline", "run"])
    assert args.model_name == names["serving"]["registered_model"]


# --------------------------------------------------------------------------- Terraform reads the names

def test_terraform_takes_the_names_from_the_names_file(hcl):
    main = hcl["infra/terraform/stack/main.tf"]  # the one place the environments' modules are wired
    assert main["locals"][0]["names"] == '${jsondecode(file("${path.module}/../names.json"))}'
    modules = {name: body for block in main["module"] for name, body in block.items()}
    assert modules["cluster"]["gpu_node_label"] == "${local.names.gpu.node_label}"
    assert modules["cluster"]["gpu_taint"] == "${local.names.gpu.taint}"
    assert modules["mlflow_db"]["db_name"] == "${local.names.mlflow.db_name}"
    assert modules["iam"]["mlflow_db_user"] == "${local.names.mlflow.db_user}"
    assert modules["iam"]["service_accounts"] == "${local.service_accounts}"
    assert "local.kubernetes_secrets" in modules["secrets"]["secrets"]
    node_groups = hcl["infra/terraform/modules/cluster/node_groups.tf"]
    gpu = next(r["aws_eks_node_group"]["gpu"] for r in node_groups["resource"]
               if "gpu" in r.get("aws_eks_node_group", {}))
    assert gpu["ami_type"] == "${local.node_groups.gpu.ami_type}"
    assert '"AL2023_x86_64_NVIDIA"' in node_groups["locals"][0]["node_groups"]["gpu"]
    assert gpu["labels"]["${(var.gpu_node_label.key)}"] == "${var.gpu_node_label.value}"
    assert gpu["taint"] == [{"key": "${var.gpu_taint.key}", "value": "${var.gpu_taint.value}",
                             "effect": "${local.eks_taint_effect[var.gpu_taint.effect]}"}]


def test_no_terraform_file_repeats_a_shared_name(tf_files, names):
    """The shared names are written once, in names.json; a literal copy in a .tf file could drift."""
    literals = [names["gpu"]["resource"], names["gpu"]["node_label"]["key"], names["images"]["components"],
                *names["pipeline_secrets"], *names["serving_secrets"], names["mlflow"]["tracking_uri"]]
    for path in tf_files:
        text = path.read_text()
        for literal in literals:
            assert f'"{literal}' not in text, f"{path.relative_to(REPO)} repeats {literal!r}: read it from names.json"


# --------------------------------------------------------------------------- serving

def test_serving_port_probes_and_environment_exist_in_the_code(names):
    source = serving_sources()
    assert ServingConfig().port == names["serving"]["port"]
    for key in ("liveness_path", "readiness_path", "metrics_path"):
        path = names["serving"][key]
        assert re.search(rf'\.get\(\s*"{re.escape(path)}"', source), f"serving has no route {path}"
    for env_to_key in names["serving_secrets"].values():
        for env_var in env_to_key:
            assert f'"{env_var}"' in source, f"serving reads no {env_var}"


def test_the_deployment_uses_the_names(names, rendered):
    for variant, objects in rendered.items():
        deployment = one(objects, "Deployment", names["serving"]["name"], names["namespaces"]["serving"])
        pod = deployment["spec"]["template"]["spec"]
        label = names["gpu"]["node_label"]
        assert pod["nodeSelector"] == {label["key"]: label["value"]}, variant
        assert pod["tolerations"] == [GPU_TOLERATION], variant
        assert pod["serviceAccountName"] == names["service_accounts"]["serving"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"][names["gpu"]["resource"]] == "1"
        assert container["ports"] == [{"name": "http", "containerPort": names["serving"]["port"], "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"]["path"] == names["serving"]["liveness_path"]
        assert container["startupProbe"]["httpGet"]["path"] == names["serving"]["liveness_path"]
        assert container["readinessProbe"]["httpGet"]["path"] == names["serving"]["readiness_path"]
        secret_env = {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                      for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        expected = {env_var: (secret, key) for group in ("pipeline_secrets", "serving_secrets")
                    for secret, env_to_key in names[group].items() for env_var, key in env_to_key.items()}
        assert secret_env == expected, variant
        assert all("value" not in e for e in container["env"]), "secrets by reference only, never literals"
        image = container["image"].rsplit(":", 1)[0] if variant != "base" else container["image"]
        assert image.rsplit("/", 1)[-1] == names["images"]["components"]


def test_the_serving_command_is_accepted_by_rrg_serve(names, rendered, tmp_path):
    deployment = one(rendered["prod"], "Deployment", names["serving"]["name"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["rrg"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve"
    assert args.model == f"models:/{names['serving']['registered_model']}@{names['serving']['model_alias']}"
    config_map = one(rendered["prod"], "ConfigMap", "rrg-serving-config")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert Path(args.config).parent == Path(mount["mountPath"])
    config_file = tmp_path / Path(args.config).name
    config_file.write_text(config_map["data"][config_file.name])
    serving = load_config(config_file).serving          # the config tree's own checks: a bad key is an error
    assert serving.port == names["serving"]["port"] and serving.host == "0.0.0.0"
    probe = container["readinessProbe"]
    assert probe["timeoutSeconds"] > serving.pacs_timeout_s, "/readyz may wait pacs_timeout_s for the PACS"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > serving.request_timeout_s, "in-flight reports must finish before the pod is killed"


def test_environment_variables_are_ones_the_code_reads(names, rendered):
    source = serving_sources()
    env = one(rendered["prod"], "ConfigMap", "rrg-serving-env")["data"]
    for name in env:
        if name.startswith("RRG_"):
            assert f'"{name}"' in source, f"the ConfigMap sets {name}, which serving does not read"
    assert env["MLFLOW_TRACKING_URI"] == names["mlflow"]["tracking_uri"]
    mlflow = names["mlflow"]
    assert mlflow["tracking_uri"] == f"http://{mlflow['service']}.{names['namespaces']['mlflow']}.svc:{mlflow['port']}"
    schedule = build_parser().parse_args(["pipeline", "schedule", "--host", "http://kfp.example"])
    assert schedule.tracking_uri == mlflow["tracking_uri"], "the scheduled runs log to the MLflow that serving reads"


# --------------------------------------------------------------------------- overlays ↔ Terraform

@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlays_match_their_terraform_environment(env, names, rendered, tfvars):
    objects, variables, project = rendered[env], tfvars[env], names["project"]
    prefix = f"{project}-{env}"
    # IRSA roles: the iam module names them <project>-<env>-<workload>.
    for workload in ("serving", "pipelines"):
        account = one(objects, "ServiceAccount", names["service_accounts"][workload], names["namespaces"][workload])
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(rf"arn:aws:iam::\d{{12}}:role/{prefix}-{workload}", role), role
    # Images: the storage module's ECR repository <project>-<env>/<image>, CUDA variant on the GPU nodes.
    (container,) = one(objects, "Deployment", names["serving"]["name"])["spec"]["template"]["spec"]["containers"]
    repository, tag = container["image"].rsplit(":", 1)
    region = variables["region"]
    assert re.fullmatch(rf"\d{{12}}\.dkr\.ecr\.{region}\.amazonaws\.com/{prefix}/{names['images']['components']}",
                        repository)
    assert tag.endswith(names["images"]["cuda_tag_suffix"])
    # Region and networks.
    assert one(objects, "ConfigMap", "rrg-serving-env")["data"]["AWS_REGION"] == region
    assert one(objects, "ClusterSecretStore", "aws-secrets-manager")["spec"]["provider"]["aws"]["region"] == region
    policy = one(objects, "NetworkPolicy", names["serving"]["name"])
    sources = [peer["ipBlock"]["cidr"] for rule in policy["spec"]["ingress"] for peer in rule["from"]
               if "ipBlock" in peer]
    assert sources == [variables["network"]["vpc_cidr"]]
    # Capacity: every serving replica needs a GPU node (one GPU each), and the monthly train step one more.
    hpa = one(objects, "HorizontalPodAutoscaler", names["serving"]["name"])
    gpu_node_group = variables["cluster"]["gpu_node_group"]
    assert gpu_node_group["max_size"] >= hpa["spec"]["maxReplicas"] + 1
    if env == "prod":
        assert gpu_node_group["min_size"] >= hpa["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_external_secrets_sync_every_secret_from_its_terraform_entry(env, names, rendered):
    wanted = {names["namespaces"]["serving"]: {**names["pipeline_secrets"], **names["serving_secrets"]},
              names["namespaces"]["pipelines"]: names["pipeline_secrets"]}
    external = find(rendered[env], "ExternalSecret")
    assert {(e["metadata"]["namespace"], e["metadata"]["name"]) for e in external} == {
        (ns, name) for ns, secrets in wanted.items() for name in secrets}
    for secret in external:
        ns, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
        spec = secret["spec"]
        assert spec["target"]["name"] == name
        assert spec["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "aws-secrets-manager"}
        assert sorted(d["secretKey"] for d in spec["data"]) == sorted(wanted[ns][name].values())
        for item in spec["data"]:
            # The secrets module names each entry <project>/<env>/<Kubernetes secret name>.
            assert item["remoteRef"] == {"key": f"{names['project']}/{env}/{name}", "property": item["secretKey"]}


def test_terraform_service_accounts_are_the_manifests(names, rendered):
    accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in find(rendered["prod"], "ServiceAccount")}
    for workload in ("serving", "pipelines"):
        assert (names["namespaces"][workload], names["service_accounts"][workload]) in accounts
    store = one(rendered["prod"], "ClusterSecretStore")["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]
    assert store == {"name": names["service_accounts"]["external_secrets"],
                     "namespace": names["namespaces"]["external_secrets"]}


def test_the_names_file_is_complete(names):
    assert set(names) >= {"project", "gpu", "pipeline_secrets", "serving_secrets", "images", "namespaces",
                          "service_accounts", "mlflow", "serving"}
    assert set(names["namespaces"]) >= set(names["service_accounts"])
    assert names["serving"]["p99_scale_up_seconds"] == 30  # the seed's serving target: P99 above 30 s → scale up
    assert re.fullmatch(r"[a-z][a-z0-9-]{1,15}", names["project"])  # a prefix of bucket, role and secret names
