"""`rrg packet verify FILE` as an auditor runs it on the packets built here: exit 0 with the files and the signer,
`error:` and exit 2 for a consistent tamper or an untrusted key (kept beside the packet tests, whose fixtures it
uses)."""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packet_inputs import EVIDENCE_FIGURE_NAMES, read_zip, rewrite_zip

from model_core import signing
from rrg.cli import main


def test_verify_prints_the_files_and_the_signer(packets, capsys):
    assert main(["packet", "verify", str(packets["pass"])]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["ok"] is True and set(result["files"]) == {"packet.json", "packet.html", "packet.pdf",
                                                             "sbom.cdx.json", *EVIDENCE_FIGURE_NAMES}
    assert "8 files match SHA256SUMS" in err and "a DEVELOPMENT key" in err


def test_verify_refuses_a_consistent_tamper_and_an_untrusted_key(packets, tmp_path, capsys):
    files = read_zip(packets["pass"])
    files["packet.json"] = files["packet.json"].replace(b'"promoted"', b'"promoted "', 1)
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files)
                                  if not n.startswith("SHA256SUMS")).encode()
    rewrite_zip(packets["pass"], tmp_path / "tampered.zip", files)
    assert main(["packet", "verify", str(tmp_path / "tampered.zip")]) == 2
    assert "does not match the signed content" in capsys.readouterr().err
    other = tmp_path / "other.pub.pem"
    other.write_bytes(signing.public_key_pem(Ed25519PrivateKey.generate().public_key()))
    assert main(["packet", "verify", str(packets["pass"]), "--trusted-key", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: packet ") and "not among the 1 trusted key(s)" in err and "Traceback" not in err
