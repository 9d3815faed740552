"""The packet archive: `<out_dir>/510k_packet_<model_name>_v<version>.zip` holding packet.json, packet.html,
packet.pdf, sbom.cdx.json (when the model recorded one), the clinical-evidence charts (PNG, when supplied),
SHA256SUMS (sha256sum format, one line per other file) and SHA256SUMS.sig (a detached Ed25519 signature over
SHA256SUMS, `model_core.signing`), and its verification.

Verification re-hashes every file AND checks the signature against trusted public keys, so a tamper that keeps
the hashes consistent (a file changed together with its SHA256SUMS line) is detected. SHA256SUMS must be exactly
one well-formed line per file: malformed, duplicated and unlisted entries are refused, not skipped.

Reproducible: fixed member dates (the packet's creation time), fixed order and attributes, and a deterministic
signature, so the same inputs and key give byte-identical archives. Atomic: everything is rendered in memory,
zipped into a temporary folder beside the target, verified, then renamed into place; a failure leaves nothing.
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

from model_core.signing import SignatureError, Signer, load_signer, read_record, trusted_public_keys, verify
from regulatory.clinical_evidence import read_figures
from regulatory.document import packet_document, render_json
from regulatory.inputs import PacketInputs
from regulatory.licences import SBOM_MEMBER, sbom_member
from regulatory.render_html import render_html
from regulatory.render_pdf import render_pdf

PACKET_FILES = ("packet.json", "packet.html", "packet.pdf")   # required
OPTIONAL_FILES = (SBOM_MEMBER,)
SUMS_FILE = "SHA256SUMS"
SIGNATURE_FILE = "SHA256SUMS.sig"
_SUMS_LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9][A-Za-z0-9._-]{0,99})")


class PacketVerificationError(ValueError):
    """A packet whose files do not match its SHA256SUMS, whose SHA256SUMS is malformed, or whose signature is
    missing, untrusted or invalid; the message names each problem."""


def packet_filename(model_name: str, model_version: str) -> str:
    """'510k_packet_<model_name>_v<model_version>.zip'."""
    return f"510k_packet_{model_name}_v{model_version}.zip"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sums(files: Mapping[str, bytes]) -> bytes:
    return "".join(f"{_sha256(files[name])}  {name}\n" for name in sorted(files)).encode("ascii")


def build_packet(inputs: PacketInputs, out_dir: str | os.PathLike, signer: Signer | None = None) -> Path:
    """Validate, render, sign and write `<out_dir>/510k_packet_<model_name>_v<version>.zip`; returns its path.

    signer: the signing key (default `model_core.signing.load_signer()`: the configured key, else the development
    key with a WARNING). Raises ValueError (naming the key) for bad inputs, before anything is written. An
    existing packet of the same name is replaced atomically.
    """
    signer = signer or load_signer()
    doc = packet_document(inputs, signed_by={"key_id": signer.key_id, "development": signer.development})
    figures = read_figures(inputs.figures)   # the re-encoded charts whose SHA-256 the document lists
    files = {"packet.json": render_json(doc), "packet.html": render_html(doc, figures),
             "packet.pdf": render_pdf(doc, figures), **figures}
    sbom = sbom_member(inputs.sbom)
    if sbom is not None:
        files[SBOM_MEMBER] = sbom
    order = [*PACKET_FILES, *(name for name in OPTIONAL_FILES if name in files), *sorted(figures), SUMS_FILE,
             SIGNATURE_FILE]
    files[SUMS_FILE] = _sums(files)
    files[SIGNATURE_FILE] = json.dumps(signer.sign(files[SUMS_FILE]), sort_keys=True).encode("ascii") + b"\n"
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
                for name in order:
                    info = zipfile.ZipInfo(name, date_time=date_time)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.create_system = 3  # Unix, whatever the building platform
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, files[name], compresslevel=9)
            fh.flush()
            os.fsync(fh.fileno())
        verify_packet(partial, trusted_keys={signer.key_id: signer.public_key})
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_sums(data: bytes, problems: list[str]) -> dict[str, str]:
    """{file: sha256} of a SHA256SUMS; every malformed line and every repeated file is a problem."""
    expected: dict[str, str] = {}
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        problems.append(f"{SUMS_FILE}: not ASCII text")
        return expected
    if text and not text.endswith("\n"):
        problems.append(f"{SUMS_FILE}: last line is not terminated (truncated?)")
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        match = _SUMS_LINE.fullmatch(line)
        if not match:
            problems.append(f"{SUMS_FILE}: line {n} is not '<sha256>  <file>'")
            continue
        digest, name = match.groups()
        if name in expected:
            problems.append(f"{SUMS_FILE}: {name} is listed more than once (line {n})")
            continue
        expected[name] = digest
    return expected


def verify_packet(zip_path: str | os.PathLike, trusted_keys: Mapping | None = None) -> dict:
    """Re-hash every file of a packet against its SHA256SUMS and check the signature over SHA256SUMS.

    trusted_keys: {key_id: Ed25519PublicKey} (default `model_core.signing.trusted_public_keys()`: $RRG_TRUSTED_KEYS,
    else the local development key). Returns {"zip", "ok": True, "files": {name: sha256}, "model_name",
    "model_version", "run_id", "decision", "signature": {"key_id", "development"}}. Raises
    PacketVerificationError naming every missing, extra, duplicated, unlisted or mismatching file, every malformed
    SHA256SUMS line, and a missing, untrusted or invalid signature.
    """
    path = Path(zip_path)
    if not path.is_file():
        raise PacketVerificationError(f"packet {path} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise PacketVerificationError(f"packet {path.name} is not a zip archive") from None
    problems: list[str] = []
    with zf:
        names = zf.namelist()
        problems += [f"{n}: appears more than once in the archive" for n in sorted({n for n in names
                                                                                   if names.count(n) > 1})]
        if SUMS_FILE not in names:
            raise PacketVerificationError(f"packet {path.name} failed verification: {SUMS_FILE}: missing from the "
                                          "archive")
        sums = zf.read(SUMS_FILE)
        expected = _read_sums(sums, problems)
        problems += [f"{name}: required, but not listed in {SUMS_FILE}" for name in PACKET_FILES
                     if name not in expected]
        problems += [f"{name}: listed in {SUMS_FILE}, but it is the manifest or its signature"
                     for name in (SUMS_FILE, SIGNATURE_FILE) if name in expected]
        actual = {}
        for name in sorted(set(expected) | set(names) - {SUMS_FILE, SIGNATURE_FILE}):
            if name not in names:
                problems.append(f"{name}: missing from the archive")
                continue
            if name not in expected:
                problems.append(f"{name}: in the archive but not listed in {SUMS_FILE}")
                continue
            try:
                actual[name] = _sha256(zf.read(name))
            except (zipfile.BadZipFile, OSError, ValueError):  # a corrupted member fails its CRC check
                problems.append(f"{name}: unreadable (corrupted member)")
                continue
            if actual[name] != expected[name]:
                problems.append(f"{name}: sha256 mismatch (SHA256SUMS lists {expected[name][:16]}..., the file "
                                f"hashes to {actual[name][:16]}...)")
        signature = None
        if SIGNATURE_FILE not in names:
            problems.append(f"{SIGNATURE_FILE}: missing (the packet is not signed)")
        else:
            try:
                record = read_record(zf.read(SIGNATURE_FILE), SIGNATURE_FILE)
                verify(sums, record, trusted_public_keys() if trusted_keys is None else trusted_keys)
                signature = {"key_id": record["key_id"], "development": record["development"]}
            except SignatureError as exc:
                problems.append(f"{SIGNATURE_FILE}: {exc}")
        if problems:
            raise PacketVerificationError(f"packet {path.name} failed verification: " + "; ".join(problems))
        meta = json.loads(zf.read("packet.json"))
    return {"zip": str(path), "ok": True, "files": actual, "signature": signature,
            "model_name": meta["packet"]["model_name"], "model_version": meta["packet"]["model_version"],
            "run_id": meta["packet"]["run_id"], "decision": meta["gate"]["decision"]}


def read_packet_document(zip_path: str | os.PathLike, trusted_keys: Mapping | None = None) -> dict:
    """packet.json of a packet, after `verify_packet` accepted it (e.g. the champion's, for the comparison)."""
    verify_packet(zip_path, trusted_keys)
    with zipfile.ZipFile(zip_path) as zf:
        return json.loads(zf.read("packet.json"))
