"""infra/terraform without a cloud: checkov's policy checks (zero failures; every skip reviewed and reasoned),
python-hcl2 parses every file, the module layout of terraform-aws-modules, staging and prod run the same code
(one stack, the environments differ only in terraform.tfvars and backend.hcl), prod keeps its high-availability
settings. `terraform fmt`, `validate` and a plan of each environment against a mocked AWS provider
(env_plan.tftest.hcl) run too where a terraform binary and the AWS provider are installed offline (never
downloaded here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from infra_layout import ENVIRONMENTS, REPO, TERRAFORM

MODULES = ("network", "cluster", "storage", "mlflow_db", "iam", "secrets")  # what the stack wires, in order
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")
STACK = "infra/terraform/stack"

# The reviewed skip list: check id → the resources it may be skipped on. The reason is the inline
# `#checkov:skip=ID:reason` comment on the resource; the tests below require one on every skip.
REVIEWED_SKIPS = {
    "CKV_AWS_144": {  # cross-region replication: clinical data stays in its region (inline in storage/bucket)
        "module.stack.module.storage.module.artifacts_bucket.aws_s3_bucket.this",
        "module.stack.module.storage.module.data_bucket.aws_s3_bucket.this",
        "module.stack.module.storage.module.access_logs_bucket.aws_s3_bucket.this",
    },
    # On the access-log bucket's module call only (storage/main.tf), so that they cover that instance alone.
    "CKV_AWS_18": {"module.stack.module.storage.module.access_logs_bucket.aws_s3_bucket.this"},  # no self-logging
    "CKV_AWS_145": {"module.stack.module.storage.module.access_logs_bucket.aws_s3_bucket.this"},  # SSE-S3 only
    "CKV2_AWS_57": {"module.stack.module.secrets.aws_secretsmanager_secret.this"},  # no rotation Lambda for these
}
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")
TERRAFORM_PROVIDER_MIRROR = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))
ENV_PLAN_TEST = Path(__file__).with_name("env_plan.tftest.hcl")


def blocks(parsed: dict, kind: str) -> dict[str, dict]:
    """The `kind` blocks (module, variable, output, …) of one parsed file, by name."""
    return {name: body for block in parsed.get(kind, []) for name, body in block.items()}


def module_dirs() -> list[Path]:
    """Every Terraform module: the stack, the modules and their submodules (a folder with .tf files)."""
    return sorted({p.parent for p in (TERRAFORM / "modules").rglob("*.tf")} | {REPO / STACK})


@pytest.fixture(scope="module")
def checkov(infra_venv) -> dict:
    # Not --quiet: the JSON must list the skipped checks with their reasons, not only the failures.
    # --skip-download: no Prisma Cloud guideline look-ups (no network; results are the same).
    result = subprocess.run(
        [str(infra_venv / "bin" / "checkov"), "-d", str(TERRAFORM), "--framework", "terraform", "--compact",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode in (0, 1), f"checkov did not run (exit {result.returncode}): {result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert [r["check_type"] for r in reports] == ["terraform"]
    return reports[0]


def test_checkov_finds_no_failed_check(checkov):
    summary = checkov["summary"]
    failures = [f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
                for f in checkov["results"].get("failed_checks", [])]
    assert failures == [] and summary["failed"] == 0, "checkov failures:\n" + "\n".join(failures)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 300 and summary["resource_count"] > 80  # it really scanned the modules


def test_checkov_skips_are_reviewed_and_each_has_a_reason(checkov):
    skipped = checkov["results"].get("skipped_checks", [])
    assert len(skipped) == checkov["summary"]["skipped"]
    for check in skipped:
        assert check["check_id"] in REVIEWED_SKIPS, f"unreviewed skip {check['check_id']} on {check['resource']}"
        assert check["resource"] in REVIEWED_SKIPS[check["check_id"]], (
            f"{check['check_id']} skipped on {check['resource']}, which the reviewed list does not name")
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.strip()) >= 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"
    found = {(c["check_id"], c["resource"]) for c in skipped}
    listed = {(check_id, res) for check_id, resources in REVIEWED_SKIPS.items() for res in resources}
    assert found == listed, f"reviewed skips that checkov no longer reports (remove them): {sorted(listed - found)}"


def test_every_inline_skip_comment_gives_a_reason(tf_files):
    for path in tf_files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if match:
                where = f"{path.relative_to(REPO)}:{number}"
                assert match.group(1) in REVIEWED_SKIPS, f"{where}: {match.group(1)} is not in the reviewed list"
                assert match.group(2) and len(match.group(2).strip()) >= 20, f"{where}: skip without a reason"
    assert not (TERRAFORM / ".checkov.yaml").exists() and not (TERRAFORM / ".checkov.yml").exists(), (
        "skips live inline, next to the resource, with their reason; a config-file skip has no reason field")


def test_python_hcl2_parses_every_file(hcl, tf_files):
    assert set(hcl) >= {str(p.relative_to(REPO)) for p in tf_files}
    assert len(tf_files) >= 4 * len(MODULES) + 4 * len(ENVIRONMENTS) + 4  # + the stack


def test_modules_are_laid_out_like_terraform_aws_modules(hcl):
    roots = [TERRAFORM / "envs" / env for env in ENVIRONMENTS]
    assert {TERRAFORM / "modules" / m for m in MODULES} <= set(module_dirs())
    for folder in module_dirs() + roots:
        for name in MODULE_FILES:
            assert f"{folder.relative_to(REPO)}/{name}" in hcl, f"{folder.relative_to(TERRAFORM)} lacks {name}"
    for path, parsed in hcl.items():
        for block in parsed.get("variable", []):
            for name, body in block.items():
                assert body.get("description") and body.get("type"), f"{path}: variable {name} needs both"
        for block in parsed.get("output", []):
            for name, body in block.items():
                assert body.get("description"), f"{path}: output {name} needs a description"
        if path.endswith("versions.tf"):
            terraform = parsed["terraform"][0]
            aws = terraform["required_providers"][0]["aws"]
            assert aws["source"] == "hashicorp/aws" and aws["version"] == ">= 5.95, < 7.0", path
            assert terraform["required_version"] == ">= 1.10", path


def test_staging_and_prod_run_the_same_code(hcl, tfvars):
    """The environments differ only in terraform.tfvars and backend.hcl: each root is the provider, its state and
    one call of the stack that hands every setting through unchanged, so what staging tested is what prod runs."""
    stack_variables = blocks(hcl[f"{STACK}/variables.tf"], "variable")
    stack_outputs = blocks(hcl[f"{STACK}/outputs.tf"], "output")
    for env in ENVIRONMENTS:
        root = f"infra/terraform/envs/{env}"
        assert sorted(p.name for p in (TERRAFORM / "envs" / env).glob("*.tf")) == sorted(MODULE_FILES)
        main = hcl[f"{root}/main.tf"]
        assert set(main) == {"provider", "module"}, f"{root}/main.tf holds more than the provider and the stack"
        (stack,) = blocks(main, "module").values()
        assert stack.pop("source") == "../../stack"
        assert stack == {name: f"${{var.{name}}}" for name in stack_variables}, f"{root}: not every setting passes"
        assert set(blocks(hcl[f"{root}/variables.tf"], "variable")) == set(stack_variables)
        assert set(tfvars[env]) <= set(stack_variables), f"{root}/terraform.tfvars sets what the stack does not take"
        assert blocks(main, "provider")["aws"]["default_tags"] == [{"tags": "${module.stack.tags}"}]
        outputs = blocks(hcl[f"{root}/outputs.tf"], "output")
        assert {name: body["value"] for name, body in outputs.items()} == {
            name: f"${{module.stack.{name}}}" for name in stack_outputs if name != "tags"}
        assert hcl[f"{root}/versions.tf"]["terraform"][0]["backend"] == [{"s3": {}}]


def test_prod_keeps_high_availability_and_backups(tfvars):
    prod, staging = tfvars["prod"], tfvars["staging"]
    assert prod["environment"] == "prod" and staging["environment"] == "staging"
    assert prod["mlflow_db"]["multi_az"] is True          # the premise of staging's single-AZ database
    assert prod["network"]["single_nat_gateway"] is False
    assert prod["mlflow_db"]["backup_retention_days"] >= 14
    assert len(prod["network"]["azs"]) >= 3 and prod["cluster"]["gpu_node_group"]["min_size"] >= 2
    assert prod["network"]["vpc_cidr"] != staging["network"]["vpc_cidr"]  # peerable; NetworkPolicies tell them apart


def test_safety_defaults_are_not_overridden(hcl):
    """Deletion protection, a private API endpoint and a non-public database hold in every environment."""
    mlflow_db = hcl["infra/terraform/modules/mlflow_db/main.tf"]["resource"]
    db = next(r["aws_db_instance"]["this"] for r in mlflow_db if "aws_db_instance" in r)
    assert db["publicly_accessible"] is False and db["storage_encrypted"] is True
    assert db["iam_database_authentication_enabled"] is True and db["manage_master_user_password"] is True
    variables = {name: body for block in hcl["infra/terraform/modules/mlflow_db/variables.tf"]["variable"]
                 for name, body in block.items()}
    assert variables["deletion_protection"]["default"] is True
    cluster_vars = {name: body for block in hcl["infra/terraform/modules/cluster/variables.tf"]["variable"]
                    for name, body in block.items()}
    assert cluster_vars["endpoint_public_access"]["default"] is False
    modules = blocks(hcl[f"{STACK}/main.tf"], "module")
    assert list(modules) == list(MODULES)
    assert "deletion_protection" not in modules["mlflow_db"]
    assert "endpoint_public_access" not in modules["cluster"]
    assert all(body["source"] == f"../modules/{name}" for name, body in modules.items())


def test_the_documented_apply_order_targets_the_stacks_modules_in_order(hcl):
    """docs/cluster.md's layered first bring-up names every module the stack wires, in the stack's order."""
    targets = re.findall(r"-target=(\S+)", (REPO / "docs" / "cluster.md").read_text())
    assert targets == [f"module.stack.module.{name}" for name in blocks(hcl[f"{STACK}/main.tf"], "module")]


def test_parameter_group_forces_ssl(hcl):
    resources = hcl["infra/terraform/modules/mlflow_db/main.tf"]["resource"]
    group = next(r["aws_db_parameter_group"]["this"] for r in resources if "aws_db_parameter_group" in r)
    parameters = {p["name"]: p["value"] for p in group["parameter"]}
    assert parameters["rds.force_ssl"] == "1"


@pytest.mark.skipif(shutil.which("terraform") is None or not TERRAFORM_PROVIDER_MIRROR.is_dir(),
                    reason="terraform fmt/validate/test need a terraform binary and the AWS provider in a local "
                           f"mirror ({TERRAFORM_PROVIDER_MIRROR}); checkov and python-hcl2 check the code without them")
def test_terraform_fmt_validate_and_plan_each_environment(tmp_path):
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl"))
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": os.devnull}
    fmt = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-no-color", str(copy), str(ENV_PLAN_TEST)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert fmt.returncode == 0, f"terraform fmt would change: {fmt.stdout}"
    for environment in ENVIRONMENTS:
        root = copy / "envs" / environment
        init = subprocess.run(["terraform", f"-chdir={root}", "init", "-backend=false", "-input=false", "-no-color",
                               f"-plugin-dir={TERRAFORM_PROVIDER_MIRROR}"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert init.returncode == 0, init.stdout + init.stderr
        validate = subprocess.run(["terraform", f"-chdir={root}", "validate", "-no-color"],
                                  capture_output=True, text=True, env=env, timeout=300)
        assert validate.returncode == 0, validate.stdout + validate.stderr
        (root / "tests").mkdir()
        shutil.copy(ENV_PLAN_TEST, root / "tests")
        plan = subprocess.run(["terraform", f"-chdir={root}", "test", "-no-color"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert plan.returncode == 0 and "1 passed, 0 failed" in plan.stdout, plan.stdout + plan.stderr
