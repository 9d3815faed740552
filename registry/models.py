"""MLflow model registry: register every pipeline run's model, promote only past the safety gates.

Aliases:  `champion` — the version served;  `previous-champion` — the one it replaced (rollback target);
          `rejected` — the newest version that failed the gates (never served);
          `challenger` — the newest passing version while a champion serves (the first passing version becomes
          champion directly); `shadow`, `ab` — its rollout stages (registry.rollout).
Every version carries its gate results as tags; every alias move adds an audit entry (who, when, why)
as a version tag `audit.<timestamp>`.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import mlflow
import mlflow.pyfunc
from mlflow.exceptions import MlflowException

from model_core.config import GenerationConfig, build_section
from model_core.data.images import load_image
from model_core.evaluation.gate_record import RECORD_DIR, GateRecordError, require_promoted
from model_core.modeling.generation import generate_report
from model_core.modeling.model_dir import find_model_dir, load_model_dir

log = logging.getLogger(__name__)

CHAMPION, PREVIOUS, REJECTED = "champion", "previous-champion", "rejected"
CHALLENGER, SHADOW, AB = "challenger", "shadow", "ab"   # rollout stages (registry.rollout); a passing version
ROLLOUT_STAGES = (CHALLENGER, SHADOW, AB)                # waits as challenger while a champion serves


class RegistryError(ValueError):
    """A registry request that cannot be honoured; the message says why."""


# MLflow's error codes for a call the server (its basic-auth app, or a proxy) refused for the caller's credentials
_REFUSALS = {"UNAUTHENTICATED": "no or wrong credentials", "PERMISSION_DENIED": "the user lacks the permission"}


def _raise_if_refused(exc: MlflowException) -> None:
    """A refusal for want of credentials is said as such, never mistaken for a missing model or alias."""
    reason = _REFUSALS.get(getattr(exc, "error_code", None))
    if reason:
        raise RegistryError(f"the MLflow server refused the request ({reason}): set MLFLOW_TRACKING_USERNAME and "
                            "MLFLOW_TRACKING_PASSWORD to a user with access to the model") from None


# --------------------------------------------------------------------------- pyfunc flavour

class ReportGeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: loads the self-contained model directory; predicts structured reports.

    Input: a DataFrame with a column `image_path` (one row per study; frontal image) and optional
    `indication`, `age`, `sex`. Output: a list of structured-report dicts.
    """

    def load_context(self, context):
        self.model, self.detection, self.saved = load_model_dir(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        gen = build_section(GenerationConfig, self.saved.get("generation", {}), "generation.")
        reports = []
        for row in model_input.to_dict(orient="records"):
            image = load_image(row["image_path"], self.model.image_size).unsqueeze(0)
            context_ = {k: row.get(k) for k in ("indication", "age", "sex") if row.get(k) is not None}
            report = generate_report(self.model, image, context_, gen, self.detection.get("thresholds"),
                                     float(self.detection.get("temperature", 1.0)))
            reports.append(report.to_dict())
        return reports


def _client(tracking_uri: str):
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri)


def log_model(tracking_uri: str, run_id: str, model_dir: str | os.PathLike) -> str:
    """Log the model directory as a pyfunc model in the run; returns the model URI."""
    mlflow.set_tracking_uri(tracking_uri)
    repo_root = Path(__file__).resolve().parent.parent
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ReportGeneratorModel(), artifacts={"model_dir": str(model_dir)},
            code_paths=[str(repo_root / "model_core"), str(repo_root / "registry")],
            pip_requirements=_requirements())
    return info.model_uri


def _requirements() -> list[str]:
    return [f"{p}=={metadata.version(p)}" for p in ("torch", "transformers", "tokenizers", "numpy", "pandas", "Pillow")]


def _audit(client, name: str, version: str, action: str, reason: str) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    entry = {"action": action, "by": getpass.getuser(), "at": stamp, "reason": reason}
    client.set_model_version_tag(name, version, f"audit.{stamp}", json.dumps(entry))


def register(tracking_uri: str, run_id: str, model_uri: str, name: str, gate: dict, trusted_keys=None) -> dict:
    """Register a version tagged with its gate results; promote it to champion only when the gate passed.

    `gate` (the gate step's output) decides only the tags and a rejection: a version it calls passing becomes
    champion (the first one) or challenger only after its run's signed gate decision verifies, says "promote" and
    matches the version's model files (`verify_version_gate`; trusted_keys as there). A version whose record does
    not is tagged `status=refused`, audited, and RegistryError is raised: a forged or edited dict moves no alias."""
    client = _client(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        _raise_if_refused(exc)
        client.create_registered_model(name, description="Chest X-ray report generator (drafting aid)")
    if model_uri.startswith("models:/"):
        mv = mlflow.register_model(model_uri, name)  # MLflow 3 logged model (models:/m-…): resolves its source
    else:
        mv = client.create_model_version(name, model_uri, run_id=run_id)
    version = mv.version
    client.set_model_version_tag(name, version, "gate.passed", str(gate["passed"]).lower())
    client.set_model_version_tag(name, version, "gate.decision", gate["decision"])
    client.set_model_version_tag(name, version, "gate.reasons", json.dumps(gate["reasons"])[:5000])
    for check in gate["checks"]:
        key = f"gate.{check['name']}" + (f".{check['finding'].replace(' ', '_')}" if check["finding"] else "")
        client.set_model_version_tag(name, version, key, json.dumps(
            {"value": check["value"], "gated": check.get("gated_value"), "threshold": check["threshold"],
             "passed": check["passed"]}))
    if gate["passed"]:
        _require_signed_pass(client, name, client.get_model_version(name, version), trusted_keys)
    if gate["passed"] and _alias_version(client, name, CHAMPION) is None:
        # The first passing version has no champion to be compared with: it becomes champion directly.
        _move_champion(client, name, version, "passed the clinical safety gates (pipeline); first champion")
        status = "champion"
    elif gate["passed"]:
        # A champion exists: the new version waits as challenger for the rollout (registry.rollout).
        client.set_registered_model_alias(name, CHALLENGER, version)
        client.set_model_version_tag(name, version, "status", CHALLENGER)
        _audit(client, name, version, CHALLENGER, "passed the clinical safety gates (pipeline); awaits the rollout")
        status = CHALLENGER
    else:
        client.set_registered_model_alias(name, REJECTED, version)
        client.set_model_version_tag(name, version, "status", "rejected")
        _audit(client, name, version, "reject", "; ".join(gate["reasons"])[:2000])
        status = "rejected"
    return {"name": name, "version": version, "status": status, "aliases": aliases_of(client, name, version)}


def _require_signed_pass(client, name: str, mv, trusted_keys) -> None:
    """The signed record must confirm a passing gate dict before any alias moves (RegistryError otherwise)."""
    try:
        verify_version_gate(client, name, mv, trusted_keys)
    except RegistryError as exc:
        client.set_model_version_tag(name, mv.version, "status", "refused")
        _audit(client, name, mv.version, "refuse", f"the gate output says passed, but {exc}"[:2000])
        log.error("registry: %s version %s refused: its signed gate decision does not confirm the pass",
                  name, mv.version)
        raise


def aliases_of(client, name: str, version: str) -> list[str]:
    return list(client.get_model_version(name, version).aliases)


def _move_champion(client, name: str, version: str, reason: str) -> None:
    current = _alias_version(client, name, CHAMPION)
    if current is not None and current != version:
        client.set_registered_model_alias(name, PREVIOUS, current)
        _audit(client, name, current, "demote", f"replaced by version {version}")
    client.set_registered_model_alias(name, CHAMPION, version)
    for stage in set(client.get_model_version(name, version).aliases) & set(ROLLOUT_STAGES):
        client.delete_registered_model_alias(name, stage)     # the champion has left the rollout
    client.set_model_version_tag(name, version, "status", "champion")
    _audit(client, name, version, "promote", reason)


def _alias_version(client, name: str, alias: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException as exc:
        _raise_if_refused(exc)
        return None


def promote(tracking_uri: str, name: str, version: str, reason: str, trusted_keys=None) -> dict:
    """Manual promotion (audited). Only a version whose run carries a signed gate decision that verifies, says
    "promote" and matches the version's model files can become champion; tags (`gate.passed`, which anyone with
    access to the MLflow server can set) are never read. trusted_keys: see `verify_version_gate`."""
    client = _client(tracking_uri)
    mv = _version(client, name, version)
    verify_version_gate(client, name, mv, trusted_keys)
    _move_champion(client, name, str(version), reason)
    return {"name": name, "version": str(version), "aliases": aliases_of(client, name, str(version))}


def verify_version_gate(client, name: str, mv, trusted_keys=None) -> dict:
    """The verified, passing signed gate decision of a registered version (RegistryError otherwise).

    Downloads the run's `gate/` artifact and the version's model files into a temporary folder and checks them
    with `model_core.evaluation.gate_record.require_promoted`. trusted_keys: {key_id: key} or None for
    $RRG_TRUSTED_KEYS (else the local development key)."""
    with tempfile.TemporaryDirectory(prefix="rrg-gate-") as tmp:
        record_dir, model_dir = Path(tmp) / "record", Path(tmp) / "model"
        try:
            if not mv.run_id:
                raise GateRecordError("the version has no run, so no signed gate decision")
            try:
                client.download_artifacts(mv.run_id, RECORD_DIR, str(record_dir))
            except (MlflowException, OSError):
                raise GateRecordError(f"its run has no `{RECORD_DIR}/` artifact with a signed gate decision") from None
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(model_dir))
            # the version's model directory (the download itself when no model card marks one)
            files_root = find_model_dir(model_dir) or model_dir
            return require_promoted(record_dir / RECORD_DIR, files_root, trusted_keys)
        except GateRecordError as exc:
            raise RegistryError(f"{name} version {mv.version} did not pass the clinical safety gates: {exc}; "
                                "it cannot be promoted") from None
        except MlflowException:
            raise RegistryError(f"{name} version {mv.version}: its model files cannot be downloaded to check them "
                                "against the signed gate decision") from None


# Audit actions that explain each alias: the version an alias points to must have, as its latest audit entry of
# these, one of them. An alias not listed needs an audit entry whose action is the alias's own name.
ALIAS_AUDIT_ACTIONS = {CHAMPION: ("promote", "rollback"), PREVIOUS: ("demote",), REJECTED: ("reject",)}


def reconcile_aliases(tracking_uri: str, name: str) -> list[dict]:
    """Alias moves the audit trail does not explain (made outside `rrg`, e.g. one REST call to MLflow).

    Returns [{alias, version, latest_audit_action, problem}], empty when every alias agrees with its version's
    audit trail; also flags a champion whose version was rejected by the gate. Read-only: it alerts, the
    operator decides (`rrg registry reconcile` exits 1 when the list is not empty)."""
    client = _client(tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        _raise_if_refused(exc)
        raise RegistryError(f"no registered model named {name!r}") from None
    found = []
    for alias, version in sorted((model.aliases or {}).items()):
        mv = client.get_model_version(name, str(version))
        audit = sorted((json.loads(v) for k, v in mv.tags.items() if k.startswith("audit.")),
                       key=lambda entry: str(entry.get("at", "")))
        allowed = ALIAS_AUDIT_ACTIONS.get(alias, (alias,))
        latest = audit[-1]["action"] if audit else None
        problem = None
        if latest not in allowed:
            problem = (f"alias {alias!r} points to version {version}, whose latest audit entry is "
                       f"{latest or 'none'!r}, not {' or '.join(allowed)}: moved outside rrg")
        elif alias == CHAMPION and (mv.tags.get("status") == "rejected" or mv.tags.get("gate.decision") == "reject"):
            problem = f"alias {alias!r} points to version {version}, which the gate rejected"
        if problem:
            log.error("registry reconcile: %s", problem)
            found.append({"alias": alias, "version": str(version), "latest_audit_action": latest,
                          "problem": problem})
    return found


def rollback(tracking_uri: str, name: str, reason: str) -> dict:
    """Make `previous-champion` the champion again (audited)."""
    client = _client(tracking_uri)
    previous = _alias_version(client, name, PREVIOUS)
    if previous is None:
        raise RegistryError(f"{name} has no previous-champion version to roll back to")
    current = _alias_version(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    _audit(client, name, previous, "rollback", reason)
    if current is not None:
        client.set_model_version_tag(name, current, "status", "rolled-back")
        _audit(client, name, current, "rolled-back", reason)
    return {"name": name, "champion": previous, "replaced": current}


def _version(client, name: str, version: str):
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        _raise_if_refused(exc)
        raise RegistryError(f"model {name!r} has no version {version}") from None


def history(tracking_uri: str, name: str) -> list[dict]:
    """Every version with its aliases, gate decision and audit trail, newest first."""
    client = _client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        _raise_if_refused(exc)
        raise RegistryError(f"cannot read model {name!r}: {exc}") from None
    if not versions:
        raise RegistryError(f"no registered model named {name!r}")
    out = []
    for found in sorted(versions, key=lambda v: int(v.version), reverse=True):
        mv = client.get_model_version(name, found.version)  # search results carry no aliases
        audit = [json.loads(v) for k, v in sorted(mv.tags.items()) if k.startswith("audit.")]
        out.append({"version": mv.version, "aliases": list(mv.aliases), "run_id": mv.run_id,
                    "gate": mv.tags.get("gate.decision"), "status": mv.tags.get("status"),
                    "created": mv.creation_timestamp, "audit": audit})
    return out


def download_packet(tracking_uri: str, name: str, version: str, out_dir: str | os.PathLike,
                    verify: Callable[[Path], object]) -> Path:
    """Fetch the 510(k) packet logged with a version's run; it reaches out_dir only once `verify` accepts it.

    verify(path) must raise on a packet whose SHA-256 manifest or signature does not verify: pass
    `regulatory.archive.verify_packet`, bound to the trusted keys (the registry imports model_core only, so the
    caller supplies it).
    """
    client = _client(tracking_uri)
    mv = _version(client, name, version)
    files = [f.path for f in client.list_artifacts(mv.run_id, "packet") if f.path.endswith(".zip")]
    if not files:
        raise RegistryError(f"{name} version {version} (run {mv.run_id}) has no packet artifact")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        local = Path(client.download_artifacts(mv.run_id, files[0], tmp))
        verify(local)
        target = out_dir / local.name
        shutil.move(str(local), target)
    return target


def download_champion_packet(tracking_uri: str, name: str, out_dir: str | os.PathLike) -> Path | None:
    """The current champion's packet zip, downloaded into out_dir UNVERIFIED, or None when the model has no
    champion yet (a first run). The caller verifies it before use: `regulatory.assemble.build_run_packet` does,
    and records a champion packet that fails verification in the new packet instead of comparing with it."""
    client = _client(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        _raise_if_refused(exc)
        return None
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    mv = _version(client, name, champion)
    files = [f.path for f in client.list_artifacts(mv.run_id, "packet") if f.path.endswith(".zip")]
    if not files:
        raise RegistryError(f"{name} champion version {champion} (run {mv.run_id}) has no packet artifact")
    return Path(client.download_artifacts(mv.run_id, files[0], str(out_dir)))
