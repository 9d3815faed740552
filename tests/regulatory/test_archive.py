"""The packet archive: its four files and their hashes, tamper detection, determinism, atomic writes."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packet_inputs import EVIDENCE_FIGURE_NAMES, make_inputs, read_zip, rewrite_zip

import regulatory.archive as archive
from model_core import signing
from regulatory import PacketVerificationError, build_packet, verify_packet


def test_packet_has_its_files_hashes_and_signature_and_verifies(packets):
    path = packets["pass"]
    assert path.name == "510k_packet_rrg-demo_v0.1.0+544817a.zip"
    files = read_zip(path)
    assert list(files) == ["packet.json", "packet.html", "packet.pdf", "sbom.cdx.json", *sorted(EVIDENCE_FIGURE_NAMES),
                           "SHA256SUMS", "SHA256SUMS.sig"]
    assert files["packet.pdf"].startswith(b"%PDF")
    result = verify_packet(path)
    assert result["ok"] and result["decision"] == "promote" and result["model_version"] == "0.1.0+544817a"
    lines = files["SHA256SUMS"].decode().splitlines()
    assert len(lines) == 8  # every file but the manifest and its signature (the 4 charts included)
    for line in lines:
        digest, name = line.split("  ")
        assert hashlib.sha256(files[name]).hexdigest() == digest == result["files"][name]
    record = json.loads(files["SHA256SUMS.sig"])
    assert record["algorithm"] == "Ed25519" and record["development"] is True
    assert result["signature"] == {"key_id": record["key_id"], "development": True}
    assert signing.development_key_id() == record["key_id"]
    doc = json.loads(files["packet.json"])
    assert doc["signature"]["key_id"] == record["key_id"] and "DEVELOPMENT key" in files["packet.html"].decode()
    assert list(path.parent.iterdir()) == [path]  # no temporary leftovers


# --------------------------------------------------------------------------- tampering

@pytest.mark.parametrize("member", ["packet.html", "packet.pdf", "packet.json"])
def test_tampered_file_is_named(packets, tmp_path, member):
    files = read_zip(packets["pass"])
    tampered = tmp_path / "tampered.zip"
    rewrite_zip(packets["pass"], tampered, {member: files[member].replace(b"0.667", b"0.967", 1) + b" "})
    with pytest.raises(PacketVerificationError, match=re.escape(member) + ": sha256 mismatch"):
        verify_packet(tampered)


def test_missing_and_extra_files_are_named(packets, tmp_path):
    missing = tmp_path / "missing.zip"
    rewrite_zip(packets["pass"], missing, {"packet.pdf": None})
    with pytest.raises(PacketVerificationError, match=r"packet\.pdf: missing from the archive"):
        verify_packet(missing)
    extra = tmp_path / "extra.zip"
    rewrite_zip(packets["pass"], extra, {})
    with zipfile.ZipFile(extra, "a") as zf:
        zf.writestr("notes.txt", b"added later")
    with pytest.raises(PacketVerificationError, match=r"notes\.txt: in the archive but not listed"):
        verify_packet(extra)
    no_sums = tmp_path / "nosums.zip"
    rewrite_zip(packets["pass"], no_sums, {"SHA256SUMS": None})
    with pytest.raises(PacketVerificationError, match="SHA256SUMS: missing"):
        verify_packet(no_sums)
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"hello")
    with pytest.raises(PacketVerificationError, match="not a zip"):
        verify_packet(not_zip)


# --------------------------------------------------------------------------- signature

def _consistent_tamper(src, dst, member: str = "packet.json") -> dict[str, bytes]:
    """Change a file AND its SHA256SUMS line, so the hashes agree again: what only a signature detects."""
    files = read_zip(src)
    files[member] = files[member].replace(b'"decision": "promote"', b'"decision": "promote" ', 1)
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files)
                                  if n not in ("SHA256SUMS", "SHA256SUMS.sig")).encode()
    rewrite_zip(src, dst, files)
    return files


def test_a_consistent_tamper_is_detected_by_the_signature(packets, tmp_path):
    tampered = tmp_path / "tampered.zip"
    files = _consistent_tamper(packets["pass"], tampered)
    for line in files["SHA256SUMS"].decode().splitlines():  # the hashes alone would pass
        digest, name = line.split("  ")
        assert hashlib.sha256(files[name]).hexdigest() == digest
    with pytest.raises(PacketVerificationError, match=r"SHA256SUMS\.sig: signature by key id [0-9a-f]{16}\.\.\. "
                                                      r"does not match the signed content"):
        verify_packet(tampered)


def test_re_signing_with_another_key_is_not_trusted(packets, tmp_path):
    tampered = tmp_path / "resigned.zip"
    files = _consistent_tamper(packets["pass"], tampered)
    attacker = Ed25519PrivateKey.generate()
    forged = signing.Signer(attacker, signing.key_id(attacker.public_key()), False, "test")
    rewrite_zip(tampered, tmp_path / "forged.zip",
                {"SHA256SUMS.sig": json.dumps(forged.sign(files["SHA256SUMS"])).encode()})
    with pytest.raises(PacketVerificationError, match=r"which is not among the 1 trusted key\(s\)"):
        verify_packet(tmp_path / "forged.zip")
    # trusting the attacker's key explicitly (and only it) accepts the forgery: trust comes from outside the packet
    assert verify_packet(tmp_path / "forged.zip", trusted_keys={forged.key_id: attacker.public_key()})["ok"]


def test_an_unsigned_or_malformed_signature_is_refused(packets, tmp_path):
    unsigned = tmp_path / "unsigned.zip"
    rewrite_zip(packets["pass"], unsigned, {"SHA256SUMS.sig": None})
    with pytest.raises(PacketVerificationError, match=r"SHA256SUMS\.sig: missing \(the packet is not signed\)"):
        verify_packet(unsigned)
    record = json.loads(read_zip(packets["pass"])["SHA256SUMS.sig"])
    for change, match in (({"signature": "AAAA"}, "signature is 3 bytes"), ({"signature": "not base64!"}, "base64"),
                          ({"key_id": "Jane Canary-Doe"}, "key_id is not a SHA-256"),
                          ({"algorithm": "RSA"}, "not an Ed25519 signature record")):
        bad = tmp_path / "bad.zip"
        rewrite_zip(packets["pass"], bad, {"SHA256SUMS.sig": json.dumps({**record, **change}).encode()})
        with pytest.raises(PacketVerificationError, match=match) as err:
            verify_packet(bad)
        assert "Canary" not in str(err.value)


def test_trust_comes_from_the_configured_keys_not_the_local_development_key(packets, tmp_path, monkeypatch):
    other = Ed25519PrivateKey.generate()
    pem = tmp_path / "release.pub.pem"
    pem.write_bytes(signing.public_key_pem(other.public_key()))
    monkeypatch.setenv(signing.ENV_TRUSTED, str(pem))
    with pytest.raises(PacketVerificationError, match="not among the 1 trusted key"):
        verify_packet(packets["pass"])  # signed with the development key, which is no longer trusted
    monkeypatch.setenv(signing.ENV_KEYS_DIR, str(tmp_path / "empty"))
    monkeypatch.delenv(signing.ENV_TRUSTED)
    with pytest.raises(PacketVerificationError, match="no trusted public key"):
        verify_packet(packets["pass"])


def test_a_configured_key_signs_as_a_release_key(tmp_path, monkeypatch):
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    monkeypatch.setenv(signing.ENV_KEY, pem.decode())
    path = build_packet(make_inputs(True), tmp_path)
    files = read_zip(path)
    assert json.loads(files["SHA256SUMS.sig"])["development"] is False
    assert "DEVELOPMENT key" not in files["packet.html"].decode()
    result = verify_packet(path, trusted_keys={signing.key_id(key.public_key()): key.public_key()})
    assert result["signature"] == {"key_id": signing.key_id(key.public_key()), "development": False}


# --------------------------------------------------------------------------- SHA256SUMS defects (issue 12)

@pytest.mark.parametrize("change, message", [
    (lambda lines: lines[:1] + ["not a sums line"] + lines[1:], r"SHA256SUMS: line 2 is not '<sha256>  <file>'"),
    (lambda lines: lines + [lines[0]], r"SHA256SUMS: bias_audit_sensitivity\.png is listed more than once \(line 9\)"),
    (lambda lines: [ln for ln in lines if not ln.endswith("packet.pdf")],
     r"packet\.pdf: required, but not listed in SHA256SUMS.*packet\.pdf: in the archive but not listed"),
    (lambda lines: [ln.upper() if ln.endswith("packet.json") else ln for ln in lines], r"line 6 is not"),
    (lambda lines: lines + [lines[0].split("  ")[0] + "  ../../etc/passwd"], r"line 9 is not"),
    (lambda lines: lines + [lines[0].split("  ")[0] + "  SHA256SUMS.sig"], r"it is the manifest or its signature"),
])
def test_malformed_duplicate_and_unlisted_sums_entries_are_refused(packets, tmp_path, change, message):
    """Each defect is refused even when the signature over the changed SHA256SUMS is valid (re-signed with the
    trusted key): the manifest's shape is checked, not only the signature."""
    files = read_zip(packets["pass"])
    lines = change(files["SHA256SUMS"].decode().splitlines())
    sums = ("\n".join(lines) + "\n").encode()
    signer = signing.load_signer()
    bad = tmp_path / "bad.zip"
    rewrite_zip(packets["pass"], bad, {"SHA256SUMS": sums, "SHA256SUMS.sig": json.dumps(signer.sign(sums)).encode()})
    with pytest.raises(PacketVerificationError, match=message):
        verify_packet(bad)


def test_a_truncated_sums_file_is_refused(packets, tmp_path):
    sums = read_zip(packets["pass"])["SHA256SUMS"][:-1]
    bad = tmp_path / "bad.zip"
    rewrite_zip(packets["pass"], bad, {"SHA256SUMS": sums,
                                       "SHA256SUMS.sig": json.dumps(signing.load_signer().sign(sums)).encode()})
    with pytest.raises(PacketVerificationError, match="last line is not terminated"):
        verify_packet(bad)


# --------------------------------------------------------------------------- determinism and atomicity

def test_same_inputs_give_byte_identical_packets(packets, tmp_path):
    again = build_packet(make_inputs(True), tmp_path)
    first, second = read_zip(packets["pass"]), read_zip(again)
    assert first["SHA256SUMS"] == second["SHA256SUMS"]
    assert first == second
    assert packets["pass"].read_bytes() == again.read_bytes()
    # and the content depends on the inputs (the timestamp is an input, not the clock)
    later = read_zip(build_packet(make_inputs(True, created="2025-11-29T00:00:00+00:00"), tmp_path / "later"))
    assert later["packet.json"] != first["packet.json"] and later["packet.pdf"] != first["packet.pdf"]


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(doc, *figures):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(archive, "render_pdf", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        build_packet(make_inputs(True), tmp_path / "out")
    assert not (tmp_path / "out").exists()     # rendering fails before the output folder is made

    monkeypatch.undo()
    target = build_packet(make_inputs(True), tmp_path / "out")

    def failing_verify(path, trusted_keys=None):
        raise PacketVerificationError("simulated")

    before = target.read_bytes()
    monkeypatch.setattr(archive, "verify_packet", failing_verify)
    with pytest.raises(PacketVerificationError):
        build_packet(make_inputs(False), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [target.name]  # old packet intact, no temp dir
    assert target.read_bytes() == before
