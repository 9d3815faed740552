"""DICOM input for serving: CR/DX instances → the model's (1, size, size) float32 tensor, plus PHI stripping.

`decode_dicom(data, size)` is the DICOM twin of `model_core.data.load_image`: an 8-bit MONOCHROME2 instance whose
pixels are those of a JPEG decodes to exactly what `load_image` gives for that JPEG (both resize an 8-bit image with
PIL bilinear and divide by 255). Deeper images follow the DICOM grayscale pipeline (PS3.3 C.11, PS3.4 N.2.1):

  stored values (BitsStored masked / sign-extended by pydicom)
  → Modality LUT: Modality LUT Sequence, else Rescale Slope/Intercept
  → VOI: Window Center/Width (first pair; VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID),
         else VOI LUT Sequence (first LUT, scaled by its nominal bit depth),
         else min–max of the modality values (8-bit unsigned images without rescale keep their full
         0–255 range instead, which is what `load_image` does with an 8-bit file)
  → presentation: MONOCHROME1 (or Presentation LUT Shape INVERSE) is inverted so that bone is bright
  → PIL bilinear resize to (size, size), values in [0, 1].
Colour instances (RGB / YBR, 8-bit) are converted to luma exactly as `load_image` converts an RGB JPEG.

Errors are `DicomInputError` (a `model_core.data.DataError`) with an HTTP-ready `status_code`:
  415  the bytes are not a DICOM Part 10 file (no 'DICM' marker at offset 128) — what DICOMweb and STOW deliver
  422  a DICOM file that cannot be used: malformed, wrong modality (only CR and DX), no pixel data, multi-frame,
       absurd dimensions (Rows × Columns > MAX_IMAGE_PIXELS, refused before any pixel is decoded),
       unsupported photometric interpretation / bit depth, or a transfer syntax that no installed decoder handles.
Error messages never quote patient data: they name the modality, sizes, transfer syntax or the decoder's reason.

Compressed transfer syntaxes decode through pydicom's plugins: JPEG Baseline/Extended and JPEG 2000 via Pillow,
JPEG Lossless and JPEG-LS via pylibjpeg + pylibjpeg-libjpeg, RLE and Deflate natively. HTJ2K is not supported.

`strip_phi(ds)` removes protected health information before anything is stored or logged; `safe_metadata(ds)` is
the allow-list of fields that may leave this module (see `PHI_REMOVE` / `PHI_EMPTY` for what is handled).
"""

from __future__ import annotations

import copy
import io
import logging

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from model_core.data.images import MAX_IMAGE_PIXELS, pil_to_tensor
from model_core.data.manifest import DataError

log = logging.getLogger(__name__)

ALLOWED_MODALITIES = ("CR", "DX")
FRONTAL_POSITIONS = frozenset({"PA", "AP"})
LATERAL_POSITIONS = frozenset({"LATERAL", "LAT", "LL", "RL"})
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422")
MIN_SIDE = 16  # as serving.images: smaller images are not radiographs
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"


class DicomInputError(DataError):
    """An uploaded or fetched DICOM instance that cannot be used; `status_code` is the HTTP status to answer."""

    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.status_code = status_code


# --------------------------------------------------------------------------- decoding

def decode_dicom(data: bytes, size: int) -> tuple[torch.Tensor, dict]:
    """DICOM Part 10 bytes → ((1, size, size) float32 tensor in [0, 1], safe metadata dict).

    The metadata holds only: modality, view ("Frontal" / "Lateral" / None, from ViewPosition), view_position,
    rows, columns, bits_stored, photometric, transfer_syntax, voi (which VOI step was applied) and the
    SOP / Series / Study Instance UIDs. No patient, physician or institution attribute is ever read into it.
    """
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    ds = parse_dicom(data)
    meta = safe_metadata(ds)
    _check_decodable(ds, meta)
    arr = _decode_pixels(ds, meta)
    tensor, meta["voi"] = _to_tensor(arr, ds, meta, size)
    return tensor, meta


def parse_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes without decoding pixels: 415 if they are not DICOM, 422 if the file is broken.

    Part 10 files (preamble + 'DICM') are the norm (DICOMweb, STOW, PACS exports). A bare dataset without the
    preamble and file meta (what some tools send as application/dicom) is accepted too when it parses and carries
    a SOP Class UID or Modality; its transfer syntax is the one pydicom detected (implicit/explicit VR).
    Deflated transfer syntax is refused before parsing: inflating it is unbounded (a zip bomb).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the DICOM file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) >= 132 and data[128:132] == b"DICM":
        if _DEFLATED_UID in _file_meta_region(data):
            raise DicomInputError("the Deflated Explicit VR Little Endian transfer syntax is not accepted; "
                                  "send the instance uncompressed or with a JPEG / JPEG 2000 / RLE transfer syntax")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            ds.file_meta.TransferSyntaxUID  # noqa: B018 — a Part 10 file without it cannot be decoded
        except Exception as exc:  # noqa: BLE001 — untrusted bytes: any parse failure is the sender's
            raise DicomInputError(f"malformed DICOM file: {_reason(exc)}") from None
        return ds
    not_dicom = DicomInputError("not a DICOM file (no 'DICM' marker at byte 128 and no parsable DICOM dataset); "
                                "send application/dicom", status_code=415)
    if len(data) < 8 or data[:3] in (b"\xff\xd8\xff", b"\x89PN") or data[:1] in (b"{", b"<", b"%"):
        raise not_dicom
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        known = "SOPClassUID" in ds or "Modality" in ds
        implicit, little = ds.original_encoding
    except Exception:  # noqa: BLE001 — untrusted bytes: any failure here means "not DICOM"
        raise not_dicom from None
    if not known or little is None:
        raise not_dicom
    ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit and little else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def decoded_bytes(data: bytes) -> int | None:
    """The memory decoding this Part 10 file takes, from its header alone (pixels not read): Rows × Columns ×
    (2 × samples × bytes per sample for the pixel data and its array + 32 for the float64 modality/VOI steps and
    the float32 image). None when there is no readable Part 10 header with dimensions (decode_dicom refuses such
    bytes before it decodes any pixel)."""
    if len(data) < 132 or data[128:132] != b"DICM" or _DEFLATED_UID in _file_meta_region(data):
        return None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples, allocated = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
    except Exception:  # noqa: BLE001 — untrusted bytes: decode_dicom reports what is wrong with them
        return None
    return max(rows, 0) * max(cols, 0) * (2 * samples * max(1, -(-allocated // 8)) + 32)


def _file_meta_region(data: bytes) -> bytes:
    """The file meta group's bytes (from its group length), or the first 4 KiB after 'DICM' if that is unusable."""
    if data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL":
        length = int.from_bytes(data[140:144], "little")
        if 0 < length <= 1 << 16:
            return data[144:144 + length]
    return data[132:132 + 4096]


def safe_metadata(ds: Dataset) -> dict:
    """The allow-listed, PHI-free description of an instance (what may be returned to a caller or logged)."""
    position = _text(ds, "ViewPosition")
    view = ("Frontal" if position in FRONTAL_POSITIONS else "Lateral" if position in LATERAL_POSITIONS else None)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return {
        "modality": _text(ds, "Modality"),
        "view": view,
        "view_position": position,
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "bits_stored": _int(ds, "BitsStored"),
        "photometric": _text(ds, "PhotometricInterpretation"),
        "transfer_syntax": str(tsyntax) if tsyntax else None,
        # the device type, never the device (no station name, serial number or institution)
        "manufacturer": _text(ds, "Manufacturer"),
        "model_name": _text(ds, "ManufacturerModelName"),
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
    }


def _check_decodable(ds: Dataset, meta: dict) -> None:
    modality = meta["modality"]
    allowed = " or ".join(ALLOWED_MODALITIES)
    if not modality:
        raise DicomInputError(f"the instance has no Modality; only chest radiographs (Modality {allowed}) are accepted")
    if modality not in ALLOWED_MODALITIES:
        raise DicomInputError(
            f"modality {modality!r} is not supported: only chest radiographs (Modality {allowed}) are accepted")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomInputError(f"the {modality} instance has no pixel data")
    if "PixelData" not in ds:
        raise DicomInputError("float pixel data is not supported for CR/DX images")
    rows, cols = meta["rows"], meta["columns"]
    if not rows or not cols or rows <= 0 or cols <= 0:
        raise DicomInputError(f"invalid image dimensions Rows={rows} Columns={cols}")
    if rows * cols > MAX_IMAGE_PIXELS:
        raise DicomInputError(f"image is {cols}×{rows} pixels, above the limit of {MAX_IMAGE_PIXELS} pixels "
                              "(8192×8192); refused before decoding", status_code=413)
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise DicomInputError(f"image is {cols}×{rows} pixels; at least {MIN_SIDE}×{MIN_SIDE} is required")
    frames = _int(ds, "NumberOfFrames") or 1
    if frames != 1:
        raise DicomInputError(f"multi-frame instances are not supported ({frames} frames); send single radiographs")
    photometric = meta["photometric"]
    samples = _int(ds, "SamplesPerPixel") or 1
    allocated, stored = _int(ds, "BitsAllocated"), meta["bits_stored"]
    if photometric in MONOCHROME and samples == 1:
        if allocated not in (8, 16) or not stored or not 1 <= stored <= allocated:
            raise DicomInputError(f"unsupported bit depth: BitsAllocated={allocated} BitsStored={stored}")
    elif photometric in COLOUR and samples == 3:
        if allocated != 8:
            raise DicomInputError(f"unsupported colour bit depth: BitsAllocated={allocated}")
    else:
        raise DicomInputError(
            f"unsupported photometric interpretation {photometric!r} with {samples} sample(s) per pixel")


def _decode_pixels(ds: Dataset, meta: dict) -> np.ndarray:
    tsyntax = ds.file_meta.TransferSyntaxUID
    if tsyntax.is_compressed:
        _check_compressed_frame(ds, tsyntax, meta)
    else:
        _check_native_length(ds, meta)
    # Pillow decodes 8-bit JPEG with the same libjpeg as `load_image`, so embedded JPEGs match it bit for bit
    # (pylibjpeg would decode them too, but with another IDCT and colour conversion).
    eight_bit_jpeg = tsyntax == JPEGBaseline8Bit or (tsyntax == JPEGExtended12Bit and (meta["bits_stored"] or 0) <= 8)
    try:
        arr = pixel_array(ds, decoding_plugin="pillow") if eight_bit_jpeg else pixel_array(ds)
    except Exception as exc:  # noqa: BLE001 — pydicom raises many types for bad or unsupported pixel data
        name = getattr(tsyntax, "name", "") or str(tsyntax)
        raise DicomInputError(f"cannot decode the pixel data ({name}): {_reason(exc)}") from None
    expected = (meta["rows"], meta["columns"]) + (() if arr.ndim == 2 else (3,))
    if arr.shape != expected:
        raise DicomInputError(f"decoded pixel array has shape {arr.shape}, expected {expected}")
    return arr


def _check_native_length(ds: Dataset, meta: dict) -> None:
    """Native pixel data must hold exactly Rows × Columns × samples × bytes per sample (plus DICOM's one pad byte
    for an odd length): pydicom would silently drop the excess or fail on a shortfall."""
    samples = _int(ds, "SamplesPerPixel") or 1
    expected = meta["rows"] * meta["columns"] * samples * ((_int(ds, "BitsAllocated") or 8) // 8)
    actual = len(ds.PixelData)
    if actual not in (expected, expected + expected % 2):
        raise DicomInputError(f"the pixel data holds {actual} bytes but Rows × Columns × samples × bytes per sample "
                              f"is {expected}")


def _check_compressed_frame(ds: Dataset, tsyntax, meta: dict) -> None:
    """The first JPEG / JPEG 2000 frame must have the header's size: codecs allocate what the codestream says."""
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as exc:  # noqa: BLE001 — untrusted bytes: any frame-parse failure is the sender's
        raise DicomInputError(f"malformed encapsulated pixel data: {_reason(exc)}") from None
    size = None
    if tsyntax in JPEGTransferSyntaxes or tsyntax in JPEGLSTransferSyntaxes:
        size = _jpeg_size(frame)
    elif tsyntax in JPEG2000TransferSyntaxes:
        size = _j2k_size(frame)
    if size is not None and size != (meta["columns"], meta["rows"]):
        raise DicomInputError(f"the compressed frame is {size[0]}×{size[1]} pixels but the header says "
                              f"{meta['columns']}×{meta['rows']}")


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG / JPEG-LS start-of-frame marker; None when none is found."""
    i = 2 if frame[:2] == b"\xff\xd8" else None
    while i is not None and i + 4 <= len(frame):
        if frame[i] != 0xFF:
            return None
        marker = frame[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(frame[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            if i + 9 > len(frame):
                return None
            height = int.from_bytes(frame[i + 5:i + 7], "big")
            width = int.from_bytes(frame[i + 7:i + 9], "big")
            return width, height
        if marker == 0xDA:  # start of scan before any SOF
            return None
        i += 2 + length
    return None


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 codestream's SIZ marker; None when it is not there."""
    if frame[:4] != b"\xff\x4f\xff\x51" or len(frame) < 24:
        return None
    xsiz, ysiz, xosiz, yosiz = (int.from_bytes(frame[8 + 4 * k:12 + 4 * k], "big") for k in range(4))
    return xsiz - xosiz, ysiz - yosiz


def _to_tensor(arr: np.ndarray, ds: Dataset, meta: dict, size: int) -> tuple[torch.Tensor, str]:
    if arr.ndim == 3:  # RGB (pydicom converts YBR to RGB): luma exactly as load_image does for RGB files
        return pil_to_tensor(Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="RGB"), size), "color"
    invert = meta["photometric"] == "MONOCHROME1" or _text(ds, "PresentationLUTShape") == "INVERSE"
    if _is_plain_8bit(ds, meta):
        gray = arr.astype(np.uint8)
        if invert:
            gray = 255 - gray
        return pil_to_tensor(Image.fromarray(gray, mode="L"), size), "none"
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    out, voi = _apply_window(values, ds), "window"
    if out is None:
        out, voi = _apply_voi_lut_sequence(values, ds), "voi_lut"
    if out is None:
        lo, hi = float(values.min()), float(values.max())
        out = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        voi = "minmax"
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if invert:
        out = 1.0 - out
    image = Image.fromarray(out, mode="F")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    result = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return torch.from_numpy(result.copy()).unsqueeze(0), voi


def _is_plain_8bit(ds: Dataset, meta: dict) -> bool:
    """8-bit unsigned values shown as they are: no modality or VOI transform in the header."""
    if meta["bits_stored"] != 8 or _int(ds, "PixelRepresentation"):
        return False
    if any(k in ds for k in ("ModalityLUTSequence", "VOILUTSequence", "WindowCenter", "WindowWidth")):
        return False
    slope, intercept = _float(ds, "RescaleSlope", 1.0), _float(ds, "RescaleIntercept", 0.0)
    return slope == 1.0 and intercept == 0.0


def _apply_window(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Window Center/Width → [0, 1] (PS3.3 C.11.2.1.2); None when absent or invalid."""
    center, width = _first(ds, "WindowCenter"), _first(ds, "WindowWidth")
    if center is None or width is None:
        return None
    function = (_text(ds, "VOILUTFunction") or "LINEAR").upper()
    if function == "LINEAR_EXACT" and width > 0:
        return (values - center) / width + 0.5
    if function == "SIGMOID" and width > 0:
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -60.0, 60.0)))
    if function == "LINEAR" and width >= 1:
        if width == 1:
            return (values > center - 0.5).astype(np.float64)
        return (values - (center - 0.5)) / (width - 1) + 0.5
    log.warning("ignoring invalid window (VOI LUT Function %s, width %s)", function, width)
    return None


def _apply_voi_lut_sequence(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """First item of the VOI LUT Sequence → [0, 1], scaled by the LUT's nominal bit depth; None when absent."""
    seq = ds.get("VOILUTSequence")
    if not seq:
        return None
    item = seq[0]
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        data = item["LUTData"].value
        if isinstance(data, (bytes, bytearray)):  # VR OW
            order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
            lut = np.frombuffer(bytes(data), dtype=f"{order}u2").astype(np.float64)
        else:  # VR US: one int or a MultiValue of ints
            lut = np.asarray([data] if isinstance(data, int) else list(data), dtype=np.float64)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DicomInputError(f"invalid VOI LUT Sequence: {_reason(exc)}") from None
    entries = entries or 65536
    if _int(ds, "PixelRepresentation") and first > 32767:  # US-encoded signed first mapped value
        first -= 65536
    lut = lut[:entries]
    if lut.size == 0:
        raise DicomInputError("invalid VOI LUT Sequence: empty LUT Data")
    # Some vendors state a nominal depth below what the data holds; trust the data then.
    depth = max(bits, int(np.ceil(np.log2(lut.max() + 1))) if lut.max() > 0 else 1)
    index = np.clip(np.rint(values - first), 0, lut.size - 1).astype(np.int64)
    return lut[index] / float(2 ** depth - 1)


# --------------------------------------------------------------------------- PHI

# PS3.15 Annex E, Table E.1-1 (Basic Application Level Confidentiality Profile), for the attributes handled here.
# "Z" attributes are emptied (they are Type 2 in the radiography IODs: kept present, zero length) and "X"
# attributes deleted. Where the profile allows X/Z/D we delete. Beyond this list strip_phi also removes every
# other Person Name (PN) element, every private element and overlay data/comments (groups 60xx), at every
# sequence depth. UIDs are kept (the profile's "Retain UIDs" option): the caller needs them to correlate with
# the PACS. Pixel data is not inspected: an instance with BurnedInAnnotation YES is not marked as de-identified.
PHI_EMPTY = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ContentDate", "ContentTime",
})
PHI_REMOVE = frozenset({
    # patient identity and demographics
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientBirthTime",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation",
    "PatientAge", "PatientSize", "PatientWeight", "PatientSexNeutered", "PatientComments", "PatientState",
    "PatientReligiousPreference", "PatientPrimaryLanguageCodeSequence", "PatientInsurancePlanCodeSequence",
    "PatientInstitutionResidence", "IssuerOfPatientID", "EthnicGroup", "Occupation", "MilitaryRank",
    "BranchOfService", "CountryOfResidence", "RegionOfResidence", "MedicalRecordLocator", "MedicalAlerts",
    "Allergies", "SmokingStatus", "PregnancyStatus", "LastMenstrualDate", "SpecialNeeds", "AdditionalPatientHistory",
    "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization", "CurrentPatientLocation",
    "ReferencedPatientSequence",
    # visit, order and procedure step
    "AdmissionID", "AdmittingDate", "AdmittingTime", "AdmittingDiagnosesDescription", "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID", "ServiceEpisodeDescription", "VisitComments", "RequestAttributesSequence",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest", "OrderEnteredBy",
    "OrderEntererLocation", "OrderCallbackPhoneNumber", "RequestedProcedureID", "RequestedProcedureDescription",
    "RequestedProcedureComments", "ReasonForStudy", "ReasonForTheRequestedProcedure", "RequestingPhysician",
    "RequestingService", "ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
    "ReferencedPerformedProcedureStepSequence", "ReferencedStudySequence",
    # people and places
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy", "OperatorsName",
    "OperatorIdentificationSequence", "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionalDepartmentName", "StationName",
    # devices (serial numbers and plate/cassette IDs can be traced to a site and time)
    "DeviceSerialNumber", "DetectorID", "PlateID", "CassetteID",
    # dates and times beyond the emptied ones
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
    "InstanceCreationDate", "InstanceCreationTime", "TimezoneOffsetFromUTC",
    # free text that may carry identifiers
    "StudyDescription", "SeriesDescription", "ProtocolName", "StudyComments", "ImageComments",
    "AcquisitionComments", "DerivationDescription", "AcquisitionDeviceProcessingDescription", "TextComments",
    "TextString",
})
DEIDENTIFICATION_METHOD = "RRG strip_phi: PS3.15 basic profile subset, UIDs kept"  # LO: 64 chars max


def strip_phi(dataset: Dataset, *, in_place: bool = False) -> Dataset:
    """A copy of `dataset` (or the dataset itself with in_place=True) without PHI; see PHI_REMOVE / PHI_EMPTY."""
    ds = dataset if in_place else copy.deepcopy(dataset)

    def clean(parent: Dataset, elem) -> None:
        tag, keyword = elem.tag, elem.keyword
        if tag.is_private or (0x6000 <= tag.group <= 0x60FF and tag.group % 2 == 0 and tag.element in (0x3000, 0x4000)):
            del parent[tag]
        elif keyword in PHI_EMPTY:
            elem.value = None if elem.VR == "SQ" else ""
        elif keyword in PHI_REMOVE or elem.VR == "PN":
            del parent[tag]

    ds.walk(clean)
    ds.remove_private_tags()  # private creators left behind by the walk
    burned_in = _text(ds, "BurnedInAnnotation") == "YES"
    ds.PatientIdentityRemoved = "NO" if burned_in else "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    return ds


# --------------------------------------------------------------------------- small readers

def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else ""
    text = str(value).strip().upper() if keyword not in ("SOPInstanceUID", "SeriesInstanceUID",
                                                         "StudyInstanceUID") else str(value).strip()
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        raise DicomInputError(f"invalid {keyword} value") from None


def _float(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        raise DicomInputError(f"invalid {keyword} value") from None


def _first(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        if not len(value):
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DicomInputError(f"invalid {keyword} value") from None


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "…"
