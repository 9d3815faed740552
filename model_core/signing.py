"""Detached Ed25519 signatures: who vouches for a file (the packet's SHA256SUMS, the gate decision).

Keys
  * Signing key, first found: `load_signer(key_file)` argument → $RRG_SIGNING_KEY (the PEM itself, e.g. mounted
    from a Kubernetes secret) → $RRG_SIGNING_KEY_FILE (a PEM file) → the DEVELOPMENT key under
    $RRG_KEYS_DIR (default `runs/keys/`), generated on first use with a WARNING. A development key signs like any
    other, but every signature it makes says `"development": true` and is not evidence for a release.
  * Trusted public keys (what a verifier accepts): `trusted_public_keys(files)` → $RRG_TRUSTED_KEYS (PEM files
    separated by the OS path separator); only when neither names a key, the local development key (a WARNING says
    so). Trust never comes from inside the signed material: a tamperer can re-sign with a key of their own.

Signature record (JSON): {"schema", "algorithm": "Ed25519", "key_id", "development", "signature"}; `key_id` is the
SHA-256 of the raw 32-byte public key (hex), `signature` the base64 of the 64-byte Ed25519 signature over the
file's exact bytes, so `openssl pkeyutl -verify -rawin` can check it too. Ed25519 is deterministic: the same key
and bytes give the same record (packets stay byte-reproducible).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

SCHEMA = "rrg.signature/1"
ALGORITHM = "Ed25519"
ENV_KEY = "RRG_SIGNING_KEY"             # the private key PEM itself (a secret mounted as an environment variable)
ENV_KEY_FILE = "RRG_SIGNING_KEY_FILE"   # path of the private key PEM
ENV_TRUSTED = "RRG_TRUSTED_KEYS"        # public key PEM files, os.pathsep-separated
ENV_KEYS_DIR = "RRG_KEYS_DIR"           # where the development key lives (default runs/keys under the checkout)
DEV_KEY_FILE = "dev_signing_key.pem"
DEV_PUBLIC_FILE = "dev_signing_key.pub.pem"
_REPO_ROOT = Path(__file__).resolve().parents[1]


class SignatureError(ValueError):
    """A signature that is missing, malformed, made by an untrusted key or not matching its file; or a key that
    cannot be loaded. The message says which, never echoing key material."""


@dataclass(frozen=True)
class Signer:
    """A loaded private key: `sign(data)` returns a signature record."""

    private_key: Ed25519PrivateKey
    key_id: str
    development: bool
    source: str   # where the key came from, for messages ("$RRG_SIGNING_KEY", a file path, ...)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> dict:
        return {"schema": SCHEMA, "algorithm": ALGORITHM, "key_id": self.key_id, "development": self.development,
                "signature": base64.b64encode(self.private_key.sign(data)).decode("ascii")}


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key: the name a signature gives its key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def keys_dir() -> Path:
    return Path(os.environ.get(ENV_KEYS_DIR) or _REPO_ROOT / "runs" / "keys")


# --------------------------------------------------------------------------- loading keys

def _private_from_pem(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError(f"signing key from {source} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"signing key from {source} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(pem_or_path: bytes | str | os.PathLike) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes or a PEM file (a private key PEM gives its public half)."""
    source = "PEM bytes"
    data = pem_or_path
    if not isinstance(pem_or_path, bytes):
        path = Path(pem_or_path)
        source = str(path)
        if not path.is_file():
            raise SignatureError(f"public key file {path} does not exist")
        data = path.read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return _private_from_pem(data, source).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"public key from {source} is a {type(key).__name__}, not an Ed25519 key")
    return key


def _write_private(path: Path, pem: bytes) -> bool:
    """Write a private key readable by its owner only; False when another process created it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if the key exists: two first runs never overwrite each other's key
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def _development_signer(directory: Path) -> Signer:
    path = directory / DEV_KEY_FILE
    if not path.is_file():
        pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())
        if _write_private(path, pem):
            log.warning("generated a DEVELOPMENT signing key at %s: signatures made with it say "
                        "\"development\": true and are not evidence for a release; set $%s or $%s for a real key",
                        path, ENV_KEY, ENV_KEY_FILE)
    key = _private_from_pem(path.read_bytes(), str(path))
    public = directory / DEV_PUBLIC_FILE
    if not public.is_file():  # the public half beside it, for auditors; replaced whole, never half-written
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{public.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(public_key_pem(key.public_key()))
        os.chmod(tmp, 0o644)
        os.replace(tmp, public)
    log.warning("signing with the DEVELOPMENT key %s (key id %s...): not for release", path, key_id(
        key.public_key())[:16])
    return Signer(key, key_id(key.public_key()), True, str(path))


def load_signer(key_file: str | os.PathLike | None = None) -> Signer:
    """The signing key: `key_file`, else $RRG_SIGNING_KEY, else $RRG_SIGNING_KEY_FILE, else the development key
    (generated under $RRG_KEYS_DIR or runs/keys/ on first use, with a WARNING)."""
    if key_file is not None:
        path = Path(key_file)
        if not path.is_file():
            raise SignatureError(f"signing key file {path} does not exist")
        key = _private_from_pem(path.read_bytes(), str(path))
        return Signer(key, key_id(key.public_key()), False, str(path))
    if os.environ.get(ENV_KEY):
        key = _private_from_pem(os.environ[ENV_KEY].encode("utf-8"), f"${ENV_KEY}")
        return Signer(key, key_id(key.public_key()), False, f"${ENV_KEY}")
    if os.environ.get(ENV_KEY_FILE):
        return load_signer(os.environ[ENV_KEY_FILE])
    return _development_signer(keys_dir())


def development_key_id() -> str | None:
    """Key id of the local development key, None when none has been generated."""
    directory = keys_dir()
    for name in (DEV_KEY_FILE, DEV_PUBLIC_FILE):
        if (directory / name).is_file():
            return key_id(load_public_key(directory / name))
    return None


def trusted_public_keys(files: Iterable[str | os.PathLike] | None = None) -> dict[str, Ed25519PublicKey]:
    """{key_id: public key} a verifier accepts: `files`, else $RRG_TRUSTED_KEYS; only when neither names a key,
    the local development key (WARNING). Empty when there is nothing to trust (verification then fails)."""
    paths = list(files or [])
    if not paths and os.environ.get(ENV_TRUSTED):
        paths = [p for p in os.environ[ENV_TRUSTED].split(os.pathsep) if p]
    if paths:
        keys = [load_public_key(p) for p in paths]
        return {key_id(k): k for k in keys}
    directory = keys_dir()
    for name in (DEV_KEY_FILE, DEV_PUBLIC_FILE):
        if (directory / name).is_file():
            key = load_public_key(directory / name)
            log.warning("no trusted keys configured ($%s): trusting the local DEVELOPMENT key (key id %s...)",
                        ENV_TRUSTED, key_id(key)[:16])
            return {key_id(key): key}
    return {}


# --------------------------------------------------------------------------- records and verification

def record_bytes(record: Mapping) -> bytes:
    """A signature record as the file that carries it (sorted keys, one line)."""
    return (json.dumps(dict(record), sort_keys=True) + "\n").encode("ascii")


def read_record(data: bytes, where: str = "signature") -> dict:
    """Parse and check the shape of a signature record; SignatureError says what is wrong."""
    try:
        record = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureError(f"{where} is not a JSON signature record") from None
    if not isinstance(record, dict):
        raise SignatureError(f"{where} is not a JSON object")
    if record.get("schema") != SCHEMA or record.get("algorithm") != ALGORITHM:
        raise SignatureError(f"{where} is not an {ALGORITHM} signature record of schema {SCHEMA}")
    kid = record.get("key_id")
    if not isinstance(kid, str) or len(kid) != 64 or any(c not in "0123456789abcdef" for c in kid):
        raise SignatureError(f"{where}: key_id is not a SHA-256 hex digest")
    if not isinstance(record.get("development"), bool):
        raise SignatureError(f"{where}: development must be true or false")
    try:
        raw = base64.b64decode(str(record.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{where}: signature is not base64") from None
    if len(raw) != 64:
        raise SignatureError(f"{where}: signature is {len(raw)} bytes, an {ALGORITHM} signature has 64")
    return record


def _as_key_map(trusted) -> dict[str, Ed25519PublicKey]:
    if isinstance(trusted, Mapping):
        return dict(trusted)
    return {key_id(k): k for k in trusted}


def verify(data: bytes, signature: Mapping | bytes, trusted_public_keys) -> bool:
    """True when `signature` (a record or its bytes) is a valid signature over `data` by a trusted key.

    trusted_public_keys: {key_id: Ed25519PublicKey} or an iterable of keys. Raises SignatureError naming the
    reason: malformed record, no trusted keys, key not trusted, or signature not matching the data.
    """
    record = read_record(signature) if isinstance(signature, bytes) else read_record(
        json.dumps(dict(signature)).encode("ascii"))
    keys = _as_key_map(trusted_public_keys)
    if not keys:
        raise SignatureError(f"no trusted public key to verify against: pass one or set ${ENV_TRUSTED}")
    key = keys.get(record["key_id"])
    if key is None:
        raise SignatureError(f"signed by key id {record['key_id'][:16]}..., which is not among the "
                             f"{len(keys)} trusted key(s)")
    try:
        key.verify(base64.b64decode(record["signature"]), data)
    except InvalidSignature:
        raise SignatureError(f"signature by key id {record['key_id'][:16]}... does not match the signed "
                             "content (the content or the signature was changed)") from None
    return True
