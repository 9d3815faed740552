"""Serving test support: a real Orthanc PACS (`orthanc` fixture) and DICOM builders (`dicom` fixture).

`orthanc` (session scope, one per xdist worker) starts `Orthanc <config>` with the DICOMweb plugin on free
loopback ports, storage in a tmp folder, and yields an `OrthancServer` (url, dicomweb, stop(), start()). When the
binary or the plugin is missing it runs scripts/install_orthanc.sh first; if that fails the tests fail with the
script's output — they never skip. ORTHANC_BINARY / ORTHANC_DICOMWEB_PLUGIN override the Debian paths.

`dicom` gives the builders: DX/CR instances from the embedded IU X-ray JPEGs in several encodings, each carrying
FAKE patient data (`FAKE_PHI`) so that PHI handling can be checked.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import torch
from filelock import FileLock
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from tiny_models import tiny_model_config

from model_core.data.manifest import EMBEDDED_ROOT
from model_core.evaluation.gate_record import RECORD_DIR, RECORD_FILE, write_gate_record
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.signing import load_signer
from serving.backends import load_model

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install_orthanc.sh"

@pytest.fixture(autouse=True)
def _report_store_in_tmp(tmp_path, monkeypatch):
    """Every app a test starts keeps its reports, prediction log (with the automation switch) and validated-study
    pool in that test's tmp folder, never in the repo's runs/."""
    monkeypatch.setenv("RRG_REPORT_STORE", str(tmp_path / "reports.sqlite3"))
    monkeypatch.setenv("RRG_PREDICTION_LOG", str(tmp_path / "predictions.sqlite3"))
    monkeypatch.setenv("RRG_VALIDATED_POOL", str(tmp_path / "validated"))


# --------------------------------------------------------------------------- Orthanc


def _orthanc_binary() -> str | None:
    explicit = os.environ.get("ORTHANC_BINARY")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("Orthanc")
    if found:
        return found
    return next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None)


def _dicomweb_plugin() -> str | None:
    explicit = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    candidates = ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                  *sorted(glob.glob("/usr/lib/orthanc/libOrthancDicomWeb.so*"))]
    return next((p for p in candidates if os.path.isfile(p)), None)


def _ensure_orthanc() -> tuple[str, str]:
    binary, plugin = _orthanc_binary(), _dicomweb_plugin()
    if binary and plugin:
        return binary, plugin
    try:
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        output, rc = (done.stdout + done.stderr)[-3000:], done.returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        output, rc = str(exc), None
    binary, plugin = _orthanc_binary(), _dicomweb_plugin()
    if not (binary and plugin):
        pytest.fail(
            f"the serving PACS tests need Orthanc with its DICOMweb plugin, and running "
            f"{INSTALL_SCRIPT.relative_to(REPO)} did not provide them (exit {rc}; binary={binary}, plugin={plugin}; "
            f"ORTHANC_BINARY / ORTHANC_DICOMWEB_PLUGIN override the paths):\n{output}", pytrace=False)
    return binary, plugin


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    """One Orthanc process on loopback ports with its storage in `workdir`; stop() and start() keep the data."""

    def __init__(self, binary: str, plugin: str, workdir: Path):
        self.binary, self.plugin, self.workdir = binary, plugin, Path(workdir)
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_offset = 0
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"
        self._configure()

    def _configure(self) -> None:
        self.http_port, self.dicom_port = _free_port(), _free_port()
        config = {
            "Name": "RRG-TEST-PACS",
            "DicomAet": "RRGTEST",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "SaveJobs": False,
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 30.0) -> None:
        """Start Orthanc and wait for /system; new ports (up to 3 tries) if one was taken meanwhile."""
        for attempt in range(3):
            try:
                self._start_once(timeout)
                return
            except RuntimeError:
                self.stop()
                if attempt == 2 or "already in use" not in self.log_tail():
                    raise
                self._configure()

    def _start_once(self, timeout: float) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.binary, str(self.config_path)], cwd=self.workdir,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {self.process.returncode} while starting:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/system", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.05)
        else:
            raise RuntimeError(f"Orthanc did not answer {self.url}/system within {timeout:.0f} s:\n{self.log_tail()}")
        with urllib.request.urlopen(f"{self.url}/plugins", timeout=5) as resp:
            plugins = json.load(resp)
        if "dicom-web" not in plugins:
            raise RuntimeError(f"Orthanc started without the DICOMweb plugin ({self.plugin}); plugins: {plugins}\n"
                               f"{self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        """Stop Orthanc: SIGTERM and wait (a graceful stop takes Orthanc about 3.5 s), or SIGKILL with kill=True."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of what the latest start wrote to the log."""
        try:
            return self.log_path.read_bytes()[self._log_offset:].decode(errors="replace")[-chars:]
        except OSError:
            return "(no Orthanc log)"


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> OrthancServer:
    """A running Orthanc with DICOMweb at `orthanc.dicomweb`; stopped at the end of the session."""
    binary, plugin = _ensure_orthanc()
    server = OrthancServer(binary, plugin, tmp_path_factory.mktemp("orthanc"))
    started = time.monotonic()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"could not start Orthanc ({binary}, plugin {plugin}): {exc}", pytrace=False)
    server.startup_seconds = time.monotonic() - started
    try:
        yield server
    finally:
        server.stop(kill=True)  # its storage is a tmp folder: nothing to shut down cleanly for


# --------------------------------------------------------------------------- DICOM builders

FRONTAL_JPEG = EMBEDDED_ROOT / "images" / "1_IM-0001-4001.dcm.jpg"
LATERAL_JPEG = EMBEDDED_ROOT / "images" / "1_IM-0001-3001.dcm.jpg"
# Fake, obviously synthetic identifiers: the PHI checks look for these strings anywhere in outputs and logs.
FAKE_PHI = {
    "PatientName": "FAKEPATIENT^TESTY^Q",
    "PatientID": "FAKE-MRN-0042",
    "PatientBirthDate": "19010203",
    "PatientSex": "O",
    "PatientAge": "123Y",
    "OtherPatientIDs": "FAKE-OTHER-ID-77",
    "PatientAddress": "1 Nowhere Lane, Faketown",
    "PatientTelephoneNumbers": "555-0100-FAKE",
    "ReferringPhysicianName": "FAKEREFERRER^DOC",
    "PerformingPhysicianName": "FAKEPERFORMER^DOC",
    "OperatorsName": "FAKEOPERATOR^TECH",
    "InstitutionName": "Fake General Hospital",
    "InstitutionAddress": "2 Fake Street, Faketown",
    "StationName": "FAKESTATION1",
    "AccessionNumber": "FAKEACC0001",
    "StudyID": "FAKESTUDY9",
    "StudyDate": "20200102",
    "StudyTime": "101112",
    "StudyDescription": "FAKE CHEST FOR FAKEPATIENT",
    "DeviceSerialNumber": "FAKE-SN-123",
}
# The values distinctive enough to search for in outputs and logs (not the sex code, age or times).
PHI_MARKERS = tuple(v for v in FAKE_PHI.values() if "FAKE" in v.upper()) + (FAKE_PHI["PatientBirthDate"],)
VARIANTS = ("8bit", "jpeg", "12bit", "16bit", "mono1")
_SOP_CLASSES = {"DX": DigitalXRayImageStorageForPresentation, "CR": ComputedRadiographyImageStorage,
                "CT": CTImageStorage}


def jpeg_luma(jpeg: Path = FRONTAL_JPEG) -> np.ndarray:
    """The JPEG's 8-bit grayscale pixels, converted exactly as `load_image` converts them."""
    with Image.open(jpeg) as im:
        return np.asarray(im.convert("L"))


def build_dicom(jpeg: Path = FRONTAL_JPEG, variant: str = "8bit", *, modality: str = "DX", view_position: str = "PA",
                pixels: bool = True, study_uid: str | None = None, series_uid: str | None = None) -> Dataset:
    """A Part 10-ready DICOM instance (with FAKE_PHI) whose image is the JPEG's.

    variants: 8bit   MONOCHROME2, 8 bits stored, no VOI attributes (= the JPEG's luma, bit for bit)
              jpeg   the JPEG file itself, encapsulated (JPEG Baseline, YBR_FULL_422, 3 samples)
              12bit  MONOCHROME2, 16 allocated / 12 stored, luma × 4095/255, Window 2048/4096 (LINEAR),
                     with garbage in the unused high bits of the first row
              16bit  MONOCHROME2, 16 stored, luma × 257, Rescale 0.5/−1000, window LINEAR_EXACT over the range
              mono1  MONOCHROME1 (255 − luma), Presentation LUT Shape INVERSE
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    sop_class = _SOP_CLASSES[modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if variant == "jpeg" else ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined = "CHEST"
    if view_position:
        ds.ViewPosition = view_position
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    for keyword, value in FAKE_PHI.items():
        setattr(ds, keyword, value)
    # a private element and a nested PN, which strip_phi must also remove
    block = ds.private_block(0x0011, "FAKE VENDOR", create=True)
    block.add_new(0x01, "LO", "FAKE-PRIVATE-PATIENT-TAG")
    ref = Dataset()
    ref.PatientName = "FAKENESTED^NAME"
    ds.RequestAttributesSequence = [ref]

    luma = jpeg_luma(jpeg)
    ds.Rows, ds.Columns = luma.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    if variant == "jpeg":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.LossyImageCompression = "01"
        pixel_bytes = encapsulate([Path(jpeg).read_bytes()])
    elif variant in ("8bit", "mono1"):
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        if variant == "mono1":
            ds.PhotometricInterpretation, ds.PresentationLUTShape = "MONOCHROME1", "INVERSE"
            luma = 255 - luma
        pixel_bytes = np.ascontiguousarray(luma, dtype=np.uint8).tobytes()
    elif variant == "12bit":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        stored = np.rint(luma.astype(np.float64) * 4095 / 255).astype(np.uint16)
        stored[0] |= 0xA000  # unused high bits set (old overlay-in-pixel practice): must be masked off
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        pixel_bytes = stored.astype("<u2").tobytes()
    else:  # 16bit
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        stored = luma.astype(np.uint16) * 257
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 0.5, -1000, "US"
        lo, hi = -1000.0, 65535 * 0.5 - 1000.0
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = (lo + hi) / 2, hi - lo, "LINEAR_EXACT"
        pixel_bytes = stored.astype("<u2").tobytes()
    if pixels:
        ds.PixelData = pixel_bytes
        if variant == "jpeg":
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """A dataset as DICOM Part 10 bytes (preamble, DICM, file meta)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="session")
def dicom() -> SimpleNamespace:
    """The DICOM builders above, for the test modules (importing `conftest` by name is ambiguous in this repo)."""
    return SimpleNamespace(build=build_dicom, to_bytes=dicom_bytes, luma=jpeg_luma, FAKE_PHI=FAKE_PHI,
                           PHI_MARKERS=PHI_MARKERS, FRONTAL_JPEG=FRONTAL_JPEG, LATERAL_JPEG=LATERAL_JPEG,
                           VARIANTS=VARIANTS)


# --------------------------------------------------------------------------- the tiny model directory

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A complete model directory of the tiny model (beam 2, 12 new tokens), built once per run (xdist-safe)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    root = shared / "serving_tiny_model"
    with FileLock(str(shared / "serving_tiny_model.lock")):
        if not (root / "model_card.json").is_file():
            torch.manual_seed(0)
            model = RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer).eval()
            model.save_pretrained(root)
            (root / "config.json").write_text(json.dumps({"generation": {"num_beams": 2, "max_new_tokens": 12}}))
            (root / "detection.json").write_text(json.dumps({"temperature": 1.0, "thresholds": {}}))
            (root / "model_card.json").write_text(json.dumps({"version": "test", "name": "tiny"}))
        if not (root / RECORD_DIR / RECORD_FILE).is_file():
            sign_passing_gate_record(root, root / RECORD_DIR)
    return root


def sign_passing_gate_record(model_dir: Path, out_dir: Path, passed: bool = True) -> Path:
    """A signed gate decision for model_dir in out_dir, made with the local development key (which serving trusts
    when no $RRG_TRUSTED_KEYS is set). The figures are placeholders: serving reads only the verified verdict and
    the model file hashes. passed=False writes a signed "reject"."""
    decision = {"passed": passed, "decision": "promote" if passed else "reject",
                "reasons": ["all clinical safety checks passed"] if passed else ["Pneumothorax: sensitivity too low"],
                "checks": []}
    metrics = out_dir.parent / f".{out_dir.name}-metrics.json"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"note": "serving test fixture"}))
    return write_gate_record(decision, model_dir, out_dir, load_signer(), metrics_file=metrics)


@pytest.fixture(scope="session")
def gate_records() -> SimpleNamespace:
    """`gate_records.sign(model_dir, out_dir, passed=True)`: a signed gate decision (development key)."""
    return SimpleNamespace(sign=sign_passing_gate_record)


@pytest.fixture(scope="session")
def tiny_model_with_export(tiny_model_dir, tmp_path_factory):
    """The tiny model with an ONNX export created by the service's startup path (`load_model`, backend auto)."""
    with FileLock(str(tiny_model_dir.parent / "serving_tiny_export.lock")):
        loaded = load_model(tiny_model_dir, allow_export_at_startup=True)
    return tiny_model_dir, loaded


# --------------------------------------------------------------------------- contract and OpenAPI
