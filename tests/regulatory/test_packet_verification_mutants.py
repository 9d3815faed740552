"""`verify_packet` on small hand-made archives (issue 12, item 5: mutants ignoring malformed or duplicate
SHA256SUMS lines and unlisted required files survived). Each archive is signed with the session's key, so every
refusal below has exactly the problems named, in the order the verifier reports them; the messages are asserted
whole. No PDF is rendered: fast enough to run once per mutant (benchmarks/mutation_safety.py, module packet)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from model_core.signing import Signer, key_id, load_signer, record_bytes
from regulatory import PacketVerificationError, verify_packet

DOC = {"packet": {"model_name": "rrg-demo", "model_version": "0.1.0+abc", "run_id": "run-7"},
       "gate": {"decision": "reject"}}
FILES = {"packet.json": json.dumps(DOC).encode(), "packet.html": b"<html>packet</html>", "packet.pdf": b"%PDF-1.4 x",
         "sbom.cdx.json": b'{"bomFormat": "CycloneDX"}'}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sums(files: dict) -> bytes:
    return "".join(f"{_sha(data)}  {name}\n" for name, data in sorted(files.items())).encode()


def _zip(path, members: list[tuple[str, bytes]]):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


def _packet(tmp_path, files=None, sums: bytes | None = None, signer: Signer | None = None, signed: bool = True,
            extra: list[tuple[str, bytes]] = ()):
    files = dict(FILES if files is None else files)
    sums = _sums(files) if sums is None else sums
    members = [*files.items(), ("SHA256SUMS", sums), *extra]
    if signed:
        members.append(("SHA256SUMS.sig", record_bytes((signer or load_signer()).sign(sums))))
    return _zip(tmp_path / "p.zip", members)


def _refusal(path, **kwargs) -> str:
    with pytest.raises(PacketVerificationError) as err:
        verify_packet(path, **kwargs)
    prefix = f"packet {path.name} failed verification: "
    assert str(err.value).startswith(prefix)
    return str(err.value)[len(prefix):]


def test_a_good_packet_verifies_to_its_exact_summary(tmp_path):
    path = _packet(tmp_path)
    signer = load_signer()
    assert verify_packet(path) == {
        "zip": str(path), "ok": True, "files": {name: _sha(data) for name, data in FILES.items()},
        "signature": {"key_id": signer.key_id, "development": True}, "model_name": "rrg-demo",
        "model_version": "0.1.0+abc", "run_id": "run-7", "decision": "reject"}


def test_the_optional_sbom_may_be_absent(tmp_path):
    files = {k: v for k, v in FILES.items() if k != "sbom.cdx.json"}
    assert set(verify_packet(_packet(tmp_path, files))["files"]) == {"packet.json", "packet.html", "packet.pdf"}


@pytest.mark.parametrize("required", ["packet.json", "packet.html", "packet.pdf"])
def test_an_unlisted_required_file_is_refused(tmp_path, required):
    files = {k: v for k, v in FILES.items() if k != required}
    assert _refusal(_packet(tmp_path, files)) == f"{required}: required, but not listed in SHA256SUMS"


def test_a_malformed_line_is_refused_and_its_file_is_then_unlisted(tmp_path):
    lines = _sums(FILES).decode().splitlines(keepends=True)
    lines[1] = lines[1].replace("  ", " ", 1)                                      # one space: not sha256sum format
    assert _refusal(_packet(tmp_path, sums="".join(lines).encode())) == (
        "SHA256SUMS: line 2 is not '<sha256>  <file>'; packet.json: required, but not listed in SHA256SUMS; "
        "packet.json: in the archive but not listed in SHA256SUMS")


@pytest.mark.parametrize("line", [
    "{digest}  packet.json  ", "{digest} *packet.json", "{upper}  packet.json", "{digest}  ../packet.json",
    "{digest}  .packet.json", "{short}  packet.json", "x{digest}  packet.json", ""])
def test_every_malformed_line_shape_is_refused(tmp_path, line):
    digest = _sha(FILES["packet.json"])
    bad = line.format(digest=digest, upper=digest.upper(), short=digest[:63])
    sums = _sums({k: v for k, v in FILES.items() if k != "packet.json"}) + (bad + "\n").encode()
    assert _refusal(_packet(tmp_path, sums=sums)).startswith("SHA256SUMS: line 4 is not '<sha256>  <file>'; ")


def test_a_duplicate_line_is_refused_with_its_line_number(tmp_path):
    sums = _sums(FILES) + f"{_sha(FILES['packet.html'])}  packet.html\n".encode()
    assert _refusal(_packet(tmp_path, sums=sums)) == "SHA256SUMS: packet.html is listed more than once (line 5)"


def test_an_unterminated_last_line_is_refused_but_still_read(tmp_path):
    assert _refusal(_packet(tmp_path, sums=_sums(FILES)[:-1])) == (
        "SHA256SUMS: last line is not terminated (truncated?)")


def test_a_non_ascii_manifest_is_refused(tmp_path):
    required = [f"{name}: required, but not listed in SHA256SUMS" for name in ("packet.json", "packet.html",
                                                                                "packet.pdf")]
    unlisted = [f"{name}: in the archive but not listed in SHA256SUMS" for name in sorted(FILES)]
    assert _refusal(_packet(tmp_path, sums=_sums(FILES) + "é\n".encode())) == "; ".join(
        ["SHA256SUMS: not ASCII text", *required, *unlisted])


def test_the_manifest_and_its_signature_may_not_list_themselves(tmp_path):
    sums = _sums(FILES) + f"{'0' * 64}  SHA256SUMS.sig\n".encode()
    assert _refusal(_packet(tmp_path, sums=sums)).startswith(
        "SHA256SUMS.sig: listed in SHA256SUMS, but it is the manifest or its signature; ")


def test_listed_but_missing_and_present_but_unlisted_files_are_named(tmp_path):
    files = dict(FILES)
    sums = _sums(files) + f"{'a' * 64}  chart.png\n".encode()
    assert _refusal(_packet(tmp_path, files, sums=sums, extra=[("notes.txt", b"n")])) == (
        "chart.png: missing from the archive; notes.txt: in the archive but not listed in SHA256SUMS")


def test_a_changed_file_is_named_with_both_hash_prefixes(tmp_path):
    files = dict(FILES, **{"packet.html": b"<html>changed</html>"})
    path = _packet(tmp_path, files, sums=_sums(FILES))
    assert _refusal(path) == (f"packet.html: sha256 mismatch (SHA256SUMS lists {_sha(FILES['packet.html'])[:16]}..., "
                              f"the file hashes to {_sha(files['packet.html'])[:16]}...)")


def test_a_member_twice_in_the_archive_is_refused(tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _packet(tmp_path, extra=[("packet.pdf", FILES["packet.pdf"])])
    assert _refusal(path) == "packet.pdf: appears more than once in the archive"


def test_an_unsigned_packet_is_refused(tmp_path):
    assert _refusal(_packet(tmp_path, signed=False)) == "SHA256SUMS.sig: missing (the packet is not signed)"


def test_trust_comes_from_the_keys_given(tmp_path):
    other = Ed25519PrivateKey.generate()
    stranger = Signer(other, key_id(other.public_key()), False, "test")
    path = _packet(tmp_path, signer=stranger)
    assert _refusal(path).startswith("SHA256SUMS.sig: ")                       # not the session's trusted key
    assert verify_packet(path, trusted_keys={stranger.key_id: other.public_key()})["signature"] == {
        "key_id": stranger.key_id, "development": False}
    assert _refusal(_packet(tmp_path), trusted_keys={stranger.key_id: other.public_key()}).startswith(
        "SHA256SUMS.sig: ")


def test_every_problem_is_reported_together(tmp_path):
    files = {k: v for k, v in FILES.items() if k != "packet.pdf"}
    sums = _sums(files) + b"garbage\n"
    assert _refusal(_packet(tmp_path, files, sums=sums, signed=False)) == (
        "SHA256SUMS: line 4 is not '<sha256>  <file>'; packet.pdf: required, but not listed in SHA256SUMS; "
        "SHA256SUMS.sig: missing (the packet is not signed)")


def test_no_manifest_not_a_zip_and_no_file_are_refused(tmp_path):
    path = _zip(tmp_path / "p.zip", list(FILES.items()))
    with pytest.raises(PacketVerificationError) as err:
        verify_packet(path)
    assert str(err.value) == "packet p.zip failed verification: SHA256SUMS: missing from the archive"
    (tmp_path / "n.zip").write_bytes(b"not a zip")
    with pytest.raises(PacketVerificationError) as err:
        verify_packet(tmp_path / "n.zip")
    assert str(err.value) == "packet n.zip is not a zip archive"
    with pytest.raises(PacketVerificationError, match=r"^packet .*absent\.zip does not exist$"):
        verify_packet(tmp_path / "absent.zip")


def test_a_duplicate_before_other_lines_does_not_stop_the_reading(tmp_path):
    lines = _sums(FILES).decode().splitlines(keepends=True)
    sums = "".join([lines[0], lines[0], *lines[1:]]).encode()
    assert _refusal(_packet(tmp_path, sums=sums)) == "SHA256SUMS: packet.html is listed more than once (line 2)"


def _corrupt(path, member_data: bytes) -> None:
    """Flip the stored bytes of one member (same length): its CRC check fails when it is read."""
    raw = path.read_bytes()
    assert raw.count(member_data) == 1
    path.write_bytes(raw.replace(member_data, bytes(b ^ 1 for b in member_data)))


@pytest.mark.parametrize("first_problem", ["unlisted", "missing", "unreadable"])
def test_a_problem_does_not_stop_the_check_of_the_files_after_it(tmp_path, first_problem):
    """Files are checked in name order; a problem with one ("a…" sorts first) still lets a changed file after it
    be found."""
    files = dict(FILES, **{"packet.html": b"<html>changed</html>"})
    sums = _sums(FILES)
    extra: list[tuple[str, bytes]] = []
    if first_problem == "unlisted":
        extra = [("a.txt", b"a")]
    elif first_problem == "missing":
        sums += f"{'a' * 64}  a.png\n".encode()
    else:
        files = {"a.bin": b"stored bytes of member a", **files}
        sums = _sums({**FILES, "a.bin": files["a.bin"]})
    path = _packet(tmp_path, files, sums=sums, extra=extra)
    if first_problem == "unreadable":
        _corrupt(path, files["a.bin"])
    first = {"unlisted": "a.txt: in the archive but not listed in SHA256SUMS",
             "missing": "a.png: missing from the archive",
             "unreadable": "a.bin: unreadable (corrupted member)"}[first_problem]
    assert _refusal(path) == (f"{first}; packet.html: sha256 mismatch (SHA256SUMS lists "
                              f"{_sha(FILES['packet.html'])[:16]}..., the file hashes to "
                              f"{_sha(files['packet.html'])[:16]}...)")


def test_a_malformed_signature_file_is_named(tmp_path):
    path = _zip(tmp_path / "p.zip", [*FILES.items(), ("SHA256SUMS", _sums(FILES)), ("SHA256SUMS.sig", b"garbage")])
    assert _refusal(path) == "SHA256SUMS.sig: SHA256SUMS.sig is not a JSON signature record"
