"""The packet archive: `<out_dir>/510k_packet_<model_name>_v<version>.zip` holding packet.json, packet.html,
packet.pdf and SHA256SUMS (sha256sum format, one line per other file), and its verification.

Reproducible: fixed member dates (the packet's creation time), fixed order and attributes, so the same inputs
give byte-identical archives. Atomic: everything is rendered in memory, zipped into a temporary folder beside the
target, verified, then renamed into place; a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Mapping

from regulatory.document import packet_document, render_json
from regulatory.inputs import PacketInputs
from regulatory.render_html import render_html
from regulatory.render_pdf import render_pdf

PACKET_FILES = ("packet.json", "packet.html", "packet.pdf")
SUMS_FILE = "SHA256SUMS"


class PacketVerificationError(ValueError):
    """A packet whose files do not match its SHA256SUMS (or that lacks a file); the message names each file."""


def packet_filename(model_name: str, model_version: str) -> str:
    """'510k_packet_<model_name>_v<model_version>.zip'."""
    return f"510k_packet_{model_name}_v{model_version}.zip"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sums(files: Mapping[str, bytes]) -> bytes:
    return "".join(f"{_sha256(files[name])}  {name}\n" for name in sorted(files)).encode("ascii")


def build_packet(inputs: PacketInputs, out_dir: str | os.PathLike) -> Path:
    """Validate, render and write `<out_dir>/510k_packet_<model_name>_v<version>.zip`; returns its path.

    Raises ValueError (naming the key) for bad inputs, before anything is written. An existing packet of the
    same name is replaced atomically.
    """
    doc = packet_document(inputs)
    files = {"packet.json": render_json(doc), "packet.html": render_html(doc), "packet.pdf": render_pdf(doc)}
    files[SUMS_FILE] = _sums(files)
    created = datetime.strptime(doc["packet"]["created"], "%Y-%m-%dT%H:%M:%SZ")
    date_time = (min(max(created.year, 1980), 2107), created.month, created.day, created.hour, created.minute,
                 created.second)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / packet_filename(inputs.model_name, inputs.model_version)
    staging = Path(tempfile.mkdtemp(prefix=".510k_packet.", suffix=".partial", dir=out))
    try:
        partial = staging / target.name
        with open(partial, "wb") as fh:
            with zipfile.ZipFile(fh, "w") as zf:
                for name in (*PACKET_FILES, SUMS_FILE):
                    info = zipfile.ZipInfo(name, date_time=date_time)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.create_system = 3  # Unix, whatever the building platform
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, files[name], compresslevel=9)
            fh.flush()
            os.fsync(fh.fileno())
        verify_packet(partial)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def verify_packet(zip_path: str | os.PathLike) -> dict:
    """Re-hash every file of a packet against its SHA256SUMS.

    Returns {"zip", "ok": True, "files": {name: sha256}, "model_name", "model_version", "run_id", "decision"}.
    Raises PacketVerificationError naming every missing, extra, duplicated or mismatching file.
    """
    path = Path(zip_path)
    if not path.is_file():
        raise PacketVerificationError(f"packet {path} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise PacketVerificationError(f"packet {path} is not a zip archive: {exc}") from exc
    problems = []
    with zf:
        names = zf.namelist()
        duplicated = sorted({n for n in names if names.count(n) > 1})
        problems += [f"{n}: appears more than once in the archive" for n in duplicated]
        if SUMS_FILE not in names:
            raise PacketVerificationError(f"packet {path.name} failed verification: {SUMS_FILE}: missing from the "
                                          "archive")
        expected = {}
        for n, line in enumerate(zf.read(SUMS_FILE).decode("ascii", errors="replace").splitlines(), 1):
            digest, sep, name = line.partition("  ")
            if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
                problems.append(f"{SUMS_FILE}: line {n} is not '<sha256>  <file>'")
                continue
            expected[name] = digest
        actual = {}
        for name in PACKET_FILES:
            if name not in expected:
                problems.append(f"{name}: not listed in {SUMS_FILE}")
        for name in sorted(set(expected) | set(names) - {SUMS_FILE}):
            if name not in names:
                problems.append(f"{name}: missing from the archive")
                continue
            if name not in expected:
                problems.append(f"{name}: in the archive but not listed in {SUMS_FILE}")
                continue
            try:
                actual[name] = _sha256(zf.read(name))
            except (zipfile.BadZipFile, OSError, ValueError) as exc:  # a corrupted member fails its CRC check
                problems.append(f"{name}: unreadable ({exc})")
                continue
            if actual[name] != expected[name]:
                problems.append(f"{name}: sha256 mismatch (SHA256SUMS lists {expected[name][:16]}..., the file "
                                f"hashes to {actual[name][:16]}...)")
        if problems:
            raise PacketVerificationError(f"packet {path.name} failed verification: " + "; ".join(problems))
        meta = json.loads(zf.read("packet.json"))
    return {"zip": str(path), "ok": True, "files": actual,
            "model_name": meta["packet"]["model_name"], "model_version": meta["packet"]["model_version"],
            "run_id": meta["packet"]["run_id"], "decision": meta["gate"]["decision"]}
