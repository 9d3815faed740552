"""Detached Ed25519 signatures: keys from the configuration or a clearly marked development key, verification
against trusted keys only, and a clear error for every way a signature can be wrong (never echoing key material)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from model_core import signing
from model_core.signing import SignatureError


@pytest.fixture(autouse=True)
def isolated_keys(tmp_path, monkeypatch):
    """No configured key of the machine leaks in; the development key lives in this test's folder."""
    for name in (signing.ENV_KEY, signing.ENV_KEY_FILE, signing.ENV_TRUSTED):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(signing.ENV_KEYS_DIR, str(tmp_path / "keys"))
    return tmp_path / "keys"


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_sign_and_verify_round_trip_deterministically():
    key = Ed25519PrivateKey.generate()
    signer = signing.Signer(key, signing.key_id(key.public_key()), False, "test")
    record = signer.sign(b"SHA256SUMS content")
    assert record == signer.sign(b"SHA256SUMS content")  # Ed25519 is deterministic: packets stay reproducible
    assert record["key_id"] == signing.key_id(key.public_key()) and len(record["key_id"]) == 64
    assert signing.verify(b"SHA256SUMS content", record, [key.public_key()]) is True
    assert signing.verify(b"SHA256SUMS content", signing.record_bytes(record),
                          {record["key_id"]: key.public_key()}) is True


def test_a_changed_content_an_untrusted_key_and_no_trust_are_refused():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    record = signing.Signer(key, signing.key_id(key.public_key()), False, "test").sign(b"content")
    with pytest.raises(SignatureError, match="does not match the signed content"):
        signing.verify(b"c0ntent", record, [key.public_key()])
    with pytest.raises(SignatureError, match=r"not among the 1 trusted key\(s\)"):
        signing.verify(b"content", record, [other.public_key()])
    with pytest.raises(SignatureError, match="no trusted public key"):
        signing.verify(b"content", record, {})


@pytest.mark.parametrize("change, message", [
    ({"schema": "other/1"}, "not an Ed25519 signature record"),
    ({"key_id": "ABC"}, "key_id is not a SHA-256 hex digest"),
    ({"development": "yes"}, "development must be true or false"),
    ({"signature": "%%%"}, "signature is not base64"),
    ({"signature": "AAAA"}, "signature is 3 bytes, an Ed25519 signature has 64"),
])
def test_malformed_records_are_named(change, message):
    key = Ed25519PrivateKey.generate()
    record = {**signing.Signer(key, signing.key_id(key.public_key()), False, "test").sign(b"x"), **change}
    with pytest.raises(SignatureError, match=message):
        signing.verify(b"x", record, [key.public_key()])
    with pytest.raises(SignatureError, match="not a JSON signature record"):
        signing.read_record(b"\xff not json")


def test_the_development_key_is_generated_once_private_and_announced(isolated_keys, caplog):
    with caplog.at_level(logging.WARNING, logger="model_core.signing"):
        signer = signing.load_signer()
    assert signer.development is True and signer.sign(b"x")["development"] is True
    assert "generated a DEVELOPMENT signing key" in caplog.text and "not for release" in caplog.text
    private = isolated_keys / signing.DEV_KEY_FILE
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert signing.load_signer().key_id == signer.key_id == signing.development_key_id()
    assert signing.load_public_key(isolated_keys / signing.DEV_PUBLIC_FILE).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw) == signer.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model_core.signing"):
        trusted = signing.trusted_public_keys()
    assert list(trusted) == [signer.key_id] and "trusting the local DEVELOPMENT key" in caplog.text


def test_first_runs_racing_agree_on_one_development_key():
    ids, errors = [], []

    def load():
        try:
            ids.append(signing.load_signer().key_id)
        except Exception as exc:  # noqa: BLE001 — collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1 and len(ids) == 6


def test_a_configured_key_from_the_environment_or_a_file(tmp_path, monkeypatch, isolated_keys):
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv(signing.ENV_KEY, _pem(key).decode())
    signer = signing.load_signer()
    assert signer.development is False and signer.key_id == signing.key_id(key.public_key())
    assert signer.source == "$RRG_SIGNING_KEY" and not isolated_keys.exists()  # no development key made
    monkeypatch.delenv(signing.ENV_KEY)
    path = tmp_path / "release.pem"
    path.write_bytes(_pem(key))
    monkeypatch.setenv(signing.ENV_KEY_FILE, str(path))
    assert signing.load_signer().key_id == signer.key_id


def test_bad_keys_are_named_without_their_content(tmp_path, monkeypatch):
    monkeypatch.setenv(signing.ENV_KEY, "-----BEGIN PRIVATE KEY-----\nSECRETCANARY\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SignatureError, match=r"from \$RRG_SIGNING_KEY is not an unencrypted PEM") as err:
        signing.load_signer()
    assert "SECRETCANARY" not in str(err.value)
    monkeypatch.delenv(signing.ENV_KEY)
    with pytest.raises(SignatureError, match="does not exist"):
        signing.load_signer(tmp_path / "missing.pem")
    with pytest.raises(SignatureError, match="does not exist"):
        signing.trusted_public_keys([tmp_path / "missing.pub.pem"])


def test_configured_trusted_keys_replace_the_development_key(tmp_path, monkeypatch):
    dev = signing.load_signer()
    release = Ed25519PrivateKey.generate()
    pub = tmp_path / "release.pub.pem"
    pub.write_bytes(signing.public_key_pem(release.public_key()))
    monkeypatch.setenv(signing.ENV_TRUSTED, str(pub))
    trusted = signing.trusted_public_keys()
    assert list(trusted) == [signing.key_id(release.public_key())] and dev.key_id not in trusted
    with pytest.raises(SignatureError, match="not among the 1 trusted"):
        signing.verify(b"x", dev.sign(b"x"), trusted)


def test_the_signature_is_checkable_without_this_code():
    """Raw Ed25519 over the file's exact bytes: any Ed25519 verifier (e.g. openssl pkeyutl -rawin) accepts it."""
    key = Ed25519PrivateKey.generate()
    record = signing.Signer(key, signing.key_id(key.public_key()), False, "test").sign(b"file bytes")
    key.public_key().verify(base64.b64decode(record["signature"]), b"file bytes")  # raises if not
    assert json.loads(signing.record_bytes(record)) == record
