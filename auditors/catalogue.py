"""What the auditors' page lists: every registered version, its gate result, and its packet once verified.

A version's packet is downloaded from the registry into a temporary folder and verified (hashes and Ed25519
signature against the trusted keys) before any field of it is read; the entry keeps only summary fields (gate
checks, PCCP verdict, hashes, signature status) and is cached for `ttl_seconds`. A download (`packet_bytes`) always
fetches and verifies afresh, so what an auditor saves is what the registry holds now and it verifies.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from registry.models import RegistryError, download_packet, history
from regulatory.archive import SUMS_FILE, PacketVerificationError, verify_packet

VERIFIED, FAILED, MISSING = "verified", "failed verification", "no packet"


class PacketUnavailable(LookupError):
    """A packet that cannot be served: none was logged, or it fails verification; the message says which."""

    def __init__(self, message: str, state: str):
        super().__init__(message)
        self.state = state


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _iso(millis) -> str | None:
    if millis is None:
        return None
    return datetime.fromtimestamp(int(millis) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _gate(document: dict) -> dict:
    gate = document.get("gate") or {}
    return {"passed": gate.get("passed"), "decision": gate.get("decision"),
            "checks": [{key: check.get(key) for key in ("name", "finding", "metric", "value", "ci_low", "ci_high",
                                                         "gated_value", "threshold", "comparison", "passed", "reason")}
                       for check in gate.get("checks", [])]}


def _pccp(document: dict) -> dict | None:
    verdict = (document.get("pccp") or {}).get("verdict")
    if not verdict:
        return None
    return {"within": verdict.get("within"), "verdict": verdict.get("verdict"), "statement": verdict.get("statement"),
            "criteria": [{k: c.get(k) for k in ("criterion", "status", "evidence")} for c in verdict.get("criteria",
                                                                                                      [])]}


class Catalogue:
    def __init__(self, tracking_uri: str, model_name: str, trusted_keys: Mapping | None = None,
                 ttl_seconds: float = 300.0):
        self.tracking_uri, self.model_name = tracking_uri, model_name
        self.trusted_keys = trusted_keys
        self.ttl_seconds = ttl_seconds
        self._cache: dict[tuple[str, str], tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def _fetch(self, version: str, folder: str) -> tuple[Path, dict]:
        """Download and verify one version's packet into `folder`; (path, verify_packet's result)."""
        results: list[dict] = []

        def verify(path: Path) -> None:
            results.append(verify_packet(path, self.trusted_keys))

        try:
            path = download_packet(self.tracking_uri, self.model_name, version, folder, verify=verify)
        except PacketVerificationError as exc:
            raise PacketUnavailable(str(exc).split("failed verification: ", 1)[-1], FAILED) from None
        except RegistryError as exc:
            raise PacketUnavailable(str(exc), MISSING) from None
        return path, results[0]

    def _packet_entry(self, version: str) -> dict:
        with tempfile.TemporaryDirectory(prefix="rrg-auditors-") as folder:
            try:
                path, result = self._fetch(version, folder)
            except PacketUnavailable as exc:
                return {"packet": {"state": exc.state, "problems": str(exc).split("; ")}, "gate": None, "pccp": None}
            data = path.read_bytes()
            with zipfile.ZipFile(path) as zf:   # verified above: its members are the ones SHA256SUMS lists
                sums, document = zf.read(SUMS_FILE), json.loads(zf.read("packet.json"))
        packet = {"state": VERIFIED, "file": path.name, "zip_sha256": _sha256(data), "size_bytes": len(data),
                  "sums_sha256": _sha256(sums), "files": dict(sorted(result["files"].items())),
                  "signature": result["signature"], "model_version": result["model_version"],
                  "created": (document.get("packet") or {}).get("created"), "problems": []}
        return {"packet": packet, "gate": _gate(document), "pccp": _pccp(document)}

    def versions(self) -> list[dict]:
        """Every version, newest first: registry fields, gate tag, and the verified packet's summary."""
        try:
            found = history(self.tracking_uri, self.model_name)
        except RegistryError:
            return []
        rows = []
        for entry in found:
            key = (str(entry["version"]), str(entry["run_id"]))
            with self._lock:
                cached = self._cache.get(key)
            if cached is None or time.monotonic() - cached[0] > self.ttl_seconds:
                cached = (time.monotonic(), self._packet_entry(key[0]))
                with self._lock:
                    self._cache[key] = cached
            rows.append({"version": key[0], "aliases": sorted(entry["aliases"]), "status": entry["status"],
                         "registry_gate": entry["gate"], "registered": _iso(entry["created"]), **cached[1]})
        return rows

    def version(self, version: str) -> dict | None:
        return next((row for row in self.versions() if row["version"] == version), None)

    def packet_bytes(self, version: str) -> tuple[str, bytes]:
        """(file name, zip bytes) of a version's packet, fetched and verified now; PacketUnavailable otherwise."""
        with tempfile.TemporaryDirectory(prefix="rrg-auditors-") as folder:
            path, _ = self._fetch(version, folder)
            return path.name, path.read_bytes()
