"""Datasets on S3: push a dataset with its manifest and SHA-256 list, materialise it back and verify every byte.

    push_dataset(iu_dataset_files(manifest, images_root), "s3://bucket/prefix", layout="iu", name="iu_xray")
    materialise_dataset("s3://bucket/prefix", dest)          # → the index; dest is an IU-format root (or MIMIC)

A pushed dataset is a prefix holding

    <files>                the dataset as laid out locally: IU format (manifest.csv, splits.csv, images/…,
                           LICENSE/README) or the MIMIC-CXR-JPG layout (the three tables, files/…, reports)
    SHA256SUMS             sha256sum's format, one line per file (the list `load_iu_xray` verifies against)
    dataset.json           the index, written last: layout, name, manifest, file count, bytes, SHA-256 of
                           SHA256SUMS. A prefix without it is an incomplete push and is refused.

Datasets are immutable once pushed (the lineage hashes of past runs point at them): pushing onto a prefix that
holds a dataset.json is refused. Materialising downloads into a staging folder beside `dest`, hashing as it
writes; a missing object or a hash mismatch raises DataError naming the file (never its contents) and removes
the staging folder, so `dest` holds a whole verified dataset or nothing.

S3 access goes through boto3: credentials and region from the usual AWS chain (environment, IRSA web identity),
the endpoint from MLFLOW_S3_ENDPOINT_URL (S3-compatible stores, the variable MLflow reads) or boto3's own
AWS_ENDPOINT_URL_S3.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from model_core import __version__
from model_core.config import DataConfig
from model_core.data.manifest import CHECKSUM_FILE, DataError, csv_row_number, read_checksums, read_manifest
from model_core.data.mimic import CHEXPERT_FILE, METADATA_FILE, REPORTS_DIRNAME, SPLIT_FILE
from model_core.files import atomic_write_text, sha256_file

INDEX_FILE = "dataset.json"
INDEX_FORMAT = 1
LAYOUTS = ("iu", "mimic-cxr-jpg")
IU_MANIFEST = "manifest.csv"
SPLITS_FILE = "splits.csv"
DATA_SUBDIR = "data"          # a pipeline's Dataset artifact keeps the materialised copy under data/<name>
WORKERS = 8                   # concurrent transfers: small files (JPEGs) are latency-bound
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ATTRIBUTION = ("LICENSE*", "README*")   # licence and attribution travel with the data (CC BY-NC-ND for IU X-ray)


@dataclasses.dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str               # without leading or trailing '/'; may be ''

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/prefix` → S3Location; DataError for anything else."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", uri or "")
    if not match:
        raise DataError("dataset location must look like s3://bucket/prefix (bucket: 3-63 lower-case letters, "
                        "digits, '.' or '-')")
    prefix = (match.group(2) or "").strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise DataError(f"dataset prefix of s3://{match.group(1)}/… has an empty, '.' or '..' part")
    return S3Location(match.group(1), prefix)


def s3_client():
    """The S3 client of pushes and materialisations (endpoint: MLFLOW_S3_ENDPOINT_URL when set)."""
    return boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)


def _s3_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "ClientError")
    return type(exc).__name__


def safe_relative(rel: str) -> bool:
    """A relative POSIX path that stays inside the dataset root (no '..', no absolute path, no backslash)."""
    path = PurePosixPath(rel)
    return (bool(rel) and "\\" not in rel and not path.is_absolute()
            and all(part not in ("", ".", "..") for part in rel.split("/"))
            and rel not in (INDEX_FILE, CHECKSUM_FILE))


# --------------------------------------------------------------------------- what a dataset is made of

def _attribution_files(root: Path) -> list[tuple[str, Path]]:
    found = {p for pattern in _ATTRIBUTION for p in root.glob(pattern) if p.is_file()}
    return [(p.name, p) for p in sorted(found)]


def iu_dataset_files(manifest: str | os.PathLike, images_root: str | os.PathLike) -> list[tuple[str, Path]]:
    """(relative name, local file) of an IU-format dataset: the manifest (as manifest.csv), splits.csv of the
    images root when there is one, every image the manifest names, and LICENSE*/README* of the images root."""
    manifest, root = Path(manifest), Path(images_root)
    if not root.is_dir():
        raise DataError(f"images root not found: {root}")
    df = read_manifest(manifest)
    files = [(IU_MANIFEST, manifest)]
    if (root / SPLITS_FILE).is_file():
        files.append((SPLITS_FILE, root / SPLITS_FILE))
    seen = set()
    for index, rel in df["image"].items():
        if rel in seen:
            continue
        seen.add(rel)
        if not safe_relative(rel):
            raise DataError(f"manifest {manifest} row {csv_row_number(index)}: image path must be relative to the "
                            "images root, without '..'")
        if not (root / rel).is_file():
            raise DataError(f"manifest {manifest} row {csv_row_number(index)}: image file not found: {root / rel}")
        files.append((rel, root / rel))
    return files + [f for f in _attribution_files(root) if f[0] not in (IU_MANIFEST, SPLITS_FILE)]


def mimic_dataset_files(data_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(relative name, local file) of a MIMIC-CXR-JPG layout: the split, CheXpert and metadata tables (.csv.gz
    or .csv), every JPEG under files/, every report under mimic-cxr-reports/, and LICENSE*/README*."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"MIMIC-CXR folder not found: {root}")
    files = []
    for table in (SPLIT_FILE, CHEXPERT_FILE, METADATA_FILE):
        found = [root / name for name in (table, table.removesuffix(".gz")) if (root / name).is_file()]
        if not found:
            raise DataError(f"MIMIC-CXR file not found: {root / table} (nor an uncompressed .csv)")
        files.append((found[0].name, found[0]))
    images = sorted((root / "files").rglob("*.jpg"))
    if not images:
        raise DataError(f"no JPEG images under {root / 'files'}")
    reports = sorted((root / REPORTS_DIRNAME).rglob("*.txt"))
    files += [(p.relative_to(root).as_posix(), p) for p in images + reports]
    return files + _attribution_files(root)


# --------------------------------------------------------------------------- push

def push_dataset(files: list[tuple[str, Path]], uri: str, *, layout: str, name: str, client=None,
                 workers: int = WORKERS) -> dict:
    """Upload `files` under `uri`, then SHA256SUMS, then dataset.json (last: the push is complete only then).

    Files listed in a SHA256SUMS beside them (the embedded data's) are checked first: a local file that no
    longer matches its recorded hash is never pushed. Returns the index written to dataset.json.
    """
    if layout not in LAYOUTS:
        raise DataError(f"dataset layout must be one of {LAYOUTS}, got {layout!r}")
    if not _NAME_RE.fullmatch(name or ""):
        raise DataError("dataset name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    names = [rel for rel, _ in files]
    if len(set(names)) != len(names):
        raise DataError("two files of the dataset map to the same name")
    loc, client = parse_s3_uri(uri), client or s3_client()
    if _exists(client, loc, INDEX_FILE):
        raise DataError(f"{loc.uri} already holds a pushed dataset; datasets are immutable once pushed (past runs' "
                        "lineage points at them): push to a new prefix")
    recorded = _recorded_hashes(files)
    with ThreadPoolExecutor(workers) as pool:
        digests = list(pool.map(lambda item, expected: _checked_digest(item[1], expected), files, recorded))
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda item: _upload(client, loc, *item), files):
            pass
    sums = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(zip(names, digests)))
    tables = [IU_MANIFEST] if layout == "iu" else [rel for rel in names if rel.startswith("mimic-cxr-2.0.0-")]
    index = {"format": INDEX_FORMAT, "layout": layout, "name": name,
             "manifest": tables,
             "files": len(files), "bytes": sum(path.stat().st_size for _, path in files),
             "sha256sums_sha256": hashlib.sha256(sums.encode()).hexdigest(),
             "pushed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model_core": __version__}
    _put(client, loc, CHECKSUM_FILE, sums.encode())
    _put(client, loc, INDEX_FILE, json.dumps(index, indent=2).encode())
    return {**index, "uri": loc.uri}


def _recorded_hashes(files: list[tuple[str, Path]]) -> list[str | None]:
    """Per file, its hash in the nearest SHA256SUMS of its folder or the two above (the embedded data's
    <root>/SHA256SUMS lists images/x.jpg), or None."""
    lists: dict[Path, dict[str, str]] = {}
    recorded = []
    for _, path in files:
        found = None
        for folder in list(path.parents)[:3]:
            if folder not in lists:
                lists[folder] = read_checksums(folder)
            found = lists[folder].get(path.relative_to(folder).as_posix())
            if found is not None:
                break
        recorded.append(found)
    return recorded


def _checked_digest(path: Path, recorded: str | None) -> str:
    digest = sha256_file(path)
    if recorded is not None and recorded != digest:
        raise DataError(f"local file {path} does not match the SHA-256 recorded beside it (modified or corrupted); "
                        "nothing was pushed")
    return digest


def _exists(client, loc: S3Location, rel: str) -> bool:
    try:
        client.head_object(Bucket=loc.bucket, Key=loc.key(rel))
        return True
    except ClientError as exc:
        if _s3_error(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise DataError(f"cannot read {loc.uri}/{rel}: {_s3_error(exc)}") from None
    except BotoCoreError as exc:
        raise DataError(f"cannot reach {loc.uri}: {_s3_error(exc)}") from None


def _upload(client, loc: S3Location, rel: str, path: Path) -> None:
    try:
        client.upload_file(str(path), loc.bucket, loc.key(rel))   # boto3 adds a CRC checksum S3 verifies
    except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
        raise DataError(f"upload of {rel} to {loc.uri} failed: {_s3_error(exc)}") from None


def _put(client, loc: S3Location, rel: str, data: bytes) -> None:
    try:
        client.put_object(Bucket=loc.bucket, Key=loc.key(rel), Body=data)
    except (BotoCoreError, ClientError) as exc:
        raise DataError(f"upload of {rel} to {loc.uri} failed: {_s3_error(exc)}") from None


# --------------------------------------------------------------------------- materialise

def read_index(uri: str, client=None) -> dict:
    """dataset.json of a pushed dataset (DataError when the prefix holds no complete push)."""
    loc, client = parse_s3_uri(uri), client or s3_client()
    raw = _get(client, loc, INDEX_FILE, missing=f"{loc.uri} holds no {INDEX_FILE}: not a pushed dataset, or its "
                                                "push did not finish")
    try:
        index = json.loads(raw)
    except ValueError:
        raise DataError(f"{loc.uri}/{INDEX_FILE} is not JSON") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or index.get("layout") not in LAYOUTS:
        raise DataError(f"{loc.uri}/{INDEX_FILE} is not a dataset index of format {INDEX_FORMAT} with a layout "
                        f"in {LAYOUTS}")
    if not _NAME_RE.fullmatch(str(index.get("name", ""))):
        raise DataError(f"{loc.uri}/{INDEX_FILE}: the dataset name is not a safe folder name")
    return index


def materialise_dataset(uri: str, dest: str | os.PathLike, client=None, workers: int = WORKERS) -> dict:
    """Download the dataset at `uri` into `dest` (which must not exist) and verify every file's SHA-256.

    `dest` ends up holding the files, SHA256SUMS and dataset.json, or does not exist at all. Returns the index.
    """
    loc, client, dest = parse_s3_uri(uri), client or s3_client(), Path(dest)
    if dest.exists():
        raise DataError(f"cannot materialise into {dest}: it already exists")
    index = read_index(uri, client)
    sums_bytes = _get(client, loc, CHECKSUM_FILE, missing=f"{loc.uri} has {INDEX_FILE} but no {CHECKSUM_FILE}")
    if hashlib.sha256(sums_bytes).hexdigest() != index.get("sha256sums_sha256"):
        raise DataError(f"{loc.uri}/{CHECKSUM_FILE} does not match the SHA-256 recorded in {INDEX_FILE} "
                        "(modified after the push)")
    expected = _parse_sums(sums_bytes, loc)
    if len(expected) != index.get("files"):
        raise DataError(f"{loc.uri}/{CHECKSUM_FILE} lists {len(expected)} files, {INDEX_FILE} says "
                        f"{index.get('files')}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(_download, client, loc, rel, digest, staging) for rel, digest in expected.items()]
            for future in futures:              # in list order: the first listed failure is the one reported
                try:
                    future.result()
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
        (staging / CHECKSUM_FILE).write_bytes(sums_bytes)
        atomic_write_text(staging / INDEX_FILE, json.dumps({**index, "uri": loc.uri}, indent=2))
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**index, "uri": loc.uri}


def _parse_sums(raw: bytes, loc: S3Location) -> dict[str, str]:
    sums = {}
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not safe_relative(rel):
            raise DataError(f"{loc.uri}/{CHECKSUM_FILE} line {n} is not '<sha256>  <relative path inside the dataset>'")
        sums[rel] = digest
    if not sums:
        raise DataError(f"{loc.uri}/{CHECKSUM_FILE} lists no files")
    return sums


def _get(client, loc: S3Location, rel: str, missing: str) -> bytes:
    try:
        return client.get_object(Bucket=loc.bucket, Key=loc.key(rel))["Body"].read()
    except ClientError as exc:
        if _s3_error(exc) in ("404", "NoSuchKey", "NotFound"):
            raise DataError(missing) from None
        raise DataError(f"cannot read {loc.uri}/{rel}: {_s3_error(exc)}") from None
    except BotoCoreError as exc:
        raise DataError(f"cannot reach {loc.uri}: {_s3_error(exc)}") from None


def _download(client, loc: S3Location, rel: str, expected: str, staging: Path) -> None:
    path = staging / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        body = client.get_object(Bucket=loc.bucket, Key=loc.key(rel))["Body"]
        with open(path, "wb") as fh:
            for chunk in body.iter_chunks(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
    except ClientError as exc:
        if _s3_error(exc) in ("404", "NoSuchKey", "NotFound"):
            raise DataError(f"{rel} is listed in {loc.uri}/{CHECKSUM_FILE} but missing from the bucket") from None
        raise DataError(f"cannot read {rel} from {loc.uri}: {_s3_error(exc)}") from None
    except BotoCoreError as exc:
        raise DataError(f"cannot read {rel} from {loc.uri}: {_s3_error(exc)}") from None
    actual = digest.hexdigest()
    if actual != expected:
        raise DataError(f"checksum mismatch for {rel} in {loc.uri}: expected sha256 {expected[:12]}…, got "
                        f"{actual[:12]}… (the object was modified or corrupted after the push)")


# --------------------------------------------------------------------------- the pipeline's view

def dataset_config(data_cfg: DataConfig, artifact_dir: str | os.PathLike, metadata: dict) -> DataConfig:
    """The data config a pipeline step uses: the materialised copy inside the step's Dataset artifact when the
    first step materialised one (metadata "data_dir", relative to the artifact), else `data_cfg` unchanged.
    Relative, because every step of a cluster run sees the artifact at its own local path."""
    data_dir = metadata.get("data_dir")
    if not data_dir:
        return data_cfg
    return dataclasses.replace(data_cfg, root=str(Path(artifact_dir) / data_dir), manifest=None)


def materialise_for_pipeline(uri: str, artifact_dir: str | os.PathLike) -> dict:
    """Materialise an IU-format dataset into `artifact_dir/data/<name>`; returns the Dataset artifact metadata
    ({"dataset_uri", "data_dir", "dataset_files", "sha256sums_sha256"}). The training pipeline reads IU-format
    manifests: a MIMIC-CXR-JPG push is refused before anything is downloaded."""
    index = read_index(uri)
    if index["layout"] != "iu":
        raise DataError(f"{parse_s3_uri(uri).uri} is a {index['layout']} dataset; the training pipeline reads "
                        "IU-format datasets (manifest.csv + images)")
    data_dir = f"{DATA_SUBDIR}/{index['name']}"
    index = materialise_dataset(uri, Path(artifact_dir) / data_dir)
    return {"dataset_uri": index["uri"], "data_dir": data_dir, "dataset_files": index["files"],
            "sha256sums_sha256": index["sha256sums_sha256"]}
