"""The packet archive: its four files and their hashes, tamper detection, determinism, atomic writes."""

from __future__ import annotations

import hashlib
import re
import zipfile

import pytest
from packet_inputs import make_inputs, read_zip, rewrite_zip

import regulatory.archive as archive
from regulatory import PacketVerificationError, build_packet, verify_packet


def test_packet_has_its_four_files_and_verifies(packets):
    path = packets["pass"]
    assert path.name == "510k_packet_rrg-demo_v0.1.0+544817a.zip"
    files = read_zip(path)
    assert set(files) == {"packet.pdf", "packet.html", "packet.json", "SHA256SUMS"}
    assert files["packet.pdf"].startswith(b"%PDF")
    result = verify_packet(path)
    assert result["ok"] and result["decision"] == "promote" and result["model_version"] == "0.1.0+544817a"
    for line in files["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256(files[name]).hexdigest() == digest == result["files"][name]
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
    def broken(doc):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(archive, "render_pdf", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        build_packet(make_inputs(True), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    monkeypatch.undo()
    target = build_packet(make_inputs(True), tmp_path / "out")

    def failing_verify(path):
        raise PacketVerificationError("simulated")

    before = target.read_bytes()
    monkeypatch.setattr(archive, "verify_packet", failing_verify)
    with pytest.raises(PacketVerificationError):
        build_packet(make_inputs(False), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [target.name]  # old packet intact, no temp dir
    assert target.read_bytes() == before
