"""serving.dicom: CR/DX decoding semantics (vs model_core.data.load_image), metadata, PHI stripping, errors."""

from __future__ import annotations

import copy
import io
import logging

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

import serving.dicom as sd
from model_core.data.images import MAX_IMAGE_PIXELS, load_image
from model_core.data.manifest import DataError
from serving.dicom import PHI_EMPTY, PHI_REMOVE, DicomInputError, decode_dicom, strip_phi

META_KEYS = {"modality", "view", "view_position", "rows", "columns", "bits_stored", "photometric",
             "transfer_syntax", "sop_instance_uid", "series_instance_uid", "study_instance_uid", "voi", "manufacturer",
             "model_name"}


def _with_pixels(ds: Dataset, arr: np.ndarray, bits_stored: int = 12) -> Dataset:
    """`ds` (a native 16-bit variant) with its pixels replaced by the uint16 array `arr`."""
    ds = copy.deepcopy(ds)
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelData = np.ascontiguousarray(arr, dtype="<u2").tobytes()
    return ds


def _ramp(lo: int = 0, hi: int = 4095) -> np.ndarray:
    return np.linspace(lo, hi, 16 * 16).round().astype(np.uint16).reshape(16, 16)


def _decode(dicom, ds, size=16):
    return decode_dicom(dicom.to_bytes(ds), size)


# --------------------------------------------------------------------------- equivalence with load_image

@pytest.mark.parametrize("size", [64, 256, 512])
@pytest.mark.parametrize("view", ["frontal", "lateral"])
@pytest.mark.parametrize("variant", ["8bit", "jpeg", "mono1"])
def test_8bit_variants_equal_load_image(dicom, variant, view, size):
    """Same pixels as the JPEG → the same tensor as load_image: native 8-bit, the JPEG itself, MONOCHROME1."""
    jpeg = dicom.FRONTAL_JPEG if view == "frontal" else dicom.LATERAL_JPEG
    tensor, meta = decode_dicom(dicom.to_bytes(dicom.build(jpeg, variant)), size)
    expected = load_image(jpeg, size)
    assert tensor.dtype == torch.float32 and tensor.shape == (1, size, size)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    # Pillow decodes the embedded JPEG with the same libjpeg as load_image: bit-identical in practice;
    # one grey level is allowed in case another JPEG decoder plugin handles it.
    atol = 1 / 255 if variant == "jpeg" else 0.0
    assert torch.allclose(tensor, expected, rtol=0, atol=atol), float((tensor - expected).abs().max())
    assert meta["voi"] == ("color" if variant == "jpeg" else "none")


@pytest.mark.parametrize("size", [64, 256, 512])
@pytest.mark.parametrize("variant", ["12bit", "16bit"])
def test_deep_variants_window_back_to_load_image(dicom, variant, size):
    """12-bit (Window 2048/4096, garbage high bits) and 16-bit (rescale + LINEAR_EXACT window) ≈ load_image."""
    tensor, meta = decode_dicom(dicom.to_bytes(dicom.build(variant=variant)), size)
    expected = load_image(dicom.FRONTAL_JPEG, size)
    diff = (tensor - expected).abs()
    # load_image resizes 8-bit values (rounded to integers by PIL); the DICOM path resizes floats
    assert float(diff.max()) <= 1.5 / 255 and float(diff.mean()) <= 0.5 / 255, (float(diff.max()), float(diff.mean()))
    assert meta["voi"] == "window" and meta["bits_stored"] == (12 if variant == "12bit" else 16)


def test_cr_modality_and_native_size(dicom):
    tensor, meta = decode_dicom(dicom.to_bytes(dicom.build(modality="CR")), 256)
    assert meta["modality"] == "CR"
    assert torch.equal(tensor, load_image(dicom.FRONTAL_JPEG, 256))


# --------------------------------------------------------------------------- the grayscale pipeline on exact values

def test_window_linear_formula(dicom):
    base = dicom.build(variant="12bit")
    arr = _ramp()
    ds = _with_pixels(base, arr)
    ds.WindowCenter, ds.WindowWidth = 1000, 501
    tensor, meta = _decode(dicom, ds)
    x = arr.astype(np.float64)
    expected = np.clip((x - 999.5) / 500 + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1
    np.testing.assert_allclose(tensor[0].numpy(), expected, atol=1e-6)
    assert meta["voi"] == "window"
    assert tensor[0, 0, 0] == 0 and tensor[0, -1, -1] == 1  # clipped outside the window


def test_window_linear_exact_sigmoid_and_multivalue(dicom):
    arr = _ramp()
    x = arr.astype(np.float64)
    ds = _with_pixels(dicom.build(variant="12bit"), arr)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = [2000, 10], [1000, 5], "LINEAR_EXACT"  # first pair wins
    np.testing.assert_allclose(_decode(dicom, ds)[0][0].numpy(), np.clip((x - 2000) / 1000 + 0.5, 0, 1), atol=1e-6)
    ds.VOILUTFunction = "SIGMOID"
    np.testing.assert_allclose(_decode(dicom, ds)[0][0].numpy(), 1 / (1 + np.exp(-4 * (x - 2000) / 1000)), atol=1e-6)


def test_rescale_applies_before_window(dicom):
    arr = _ramp(0, 2000)
    ds = _with_pixels(dicom.build(variant="12bit"), arr)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # modality values −1000 … 3000
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1000, 4000, "LINEAR_EXACT"
    expected = np.clip((arr * 2.0 - 1000 - 1000) / 4000 + 0.5, 0, 1)
    np.testing.assert_allclose(_decode(dicom, ds)[0][0].numpy(), expected, atol=1e-6)


def test_no_window_uses_min_max_for_deep_images(dicom):
    arr = _ramp(100, 3100)
    ds = _with_pixels(dicom.build(variant="12bit"), arr)
    del ds.WindowCenter, ds.WindowWidth
    tensor, meta = _decode(dicom, ds)
    np.testing.assert_allclose(tensor[0].numpy(), (arr - 100.0) / 3000, atol=1e-6)
    assert meta["voi"] == "minmax"


def test_invalid_window_falls_back_to_min_max(dicom):
    ds = _with_pixels(dicom.build(variant="12bit"), _ramp(100, 3100))
    ds.WindowWidth = 0
    assert _decode(dicom, ds)[1]["voi"] == "minmax"


def test_voi_lut_sequence(dicom):
    arr = _ramp(0, 4095)
    ds = _with_pixels(dicom.build(variant="12bit"), arr)
    del ds.WindowCenter, ds.WindowWidth
    lut = (np.sqrt(np.arange(4096) / 4095) * 255).round().astype(np.uint16)  # gamma 0.5, 8-bit output
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTData = lut.tolist()
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = [item]
    tensor, meta = _decode(dicom, ds)
    np.testing.assert_allclose(tensor[0].numpy(), lut[arr] / 255.0, atol=1e-6)
    assert meta["voi"] == "voi_lut"


def test_monochrome1_is_inverted_after_windowing(dicom):
    arr = _ramp()
    ds = _with_pixels(dicom.build(variant="12bit"), arr)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2048, 4096, "LINEAR_EXACT"
    mono2 = _decode(dicom, ds)[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = _decode(dicom, ds)[0]
    torch.testing.assert_close(mono1, 1 - mono2, atol=1e-6, rtol=0)


def test_high_bits_above_bits_stored_are_ignored(dicom):
    arr = _ramp()
    clean = _with_pixels(dicom.build(variant="12bit"), arr)
    dirty = _with_pixels(dicom.build(variant="12bit"), arr | 0xF000)
    assert torch.equal(_decode(dicom, clean)[0], _decode(dicom, dirty)[0])


def test_signed_pixels(dicom):
    arr = _ramp(0, 2000).astype(np.int16) - 1000  # −1000 … 1000, two's complement in 16 bits
    ds = _with_pixels(dicom.build(variant="12bit"), arr.view(np.uint16) & 0x0FFF)
    ds.PixelRepresentation = 1
    del ds.WindowCenter, ds.WindowWidth
    np.testing.assert_allclose(_decode(dicom, ds)[0][0].numpy(), (arr + 1000) / 2000.0, atol=1e-6)


def _j2k(dicom, ds: Dataset, codestream: bytes) -> Dataset:
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def test_compressed_transfer_syntaxes_decode_like_native(dicom):
    """RLE Lossless (pydicom) and JPEG 2000 Lossless (Pillow/OpenJPEG) give the native instance's tensor."""
    deep = dicom.build(variant="12bit")
    rle = copy.deepcopy(deep)
    rle.compress(RLELossless)
    tensor, meta = decode_dicom(dicom.to_bytes(rle), 64)
    assert meta["transfer_syntax"] == RLELossless
    assert torch.equal(tensor, decode_dicom(dicom.to_bytes(deep), 64)[0])

    plain = dicom.build()
    buf = io.BytesIO()
    Image.fromarray(dicom.luma()).save(buf, "JPEG2000", no_jp2=True)  # reversible 5/3 wavelet: lossless
    tensor, meta = decode_dicom(dicom.to_bytes(_j2k(dicom, plain, buf.getvalue())), 64)
    assert meta["transfer_syntax"] == JPEG2000Lossless
    assert torch.equal(tensor, load_image(dicom.FRONTAL_JPEG, 64))


def test_corrupt_or_mismatched_compressed_frames_are_422(dicom):
    plain = dicom.build()
    buf = io.BytesIO()
    Image.fromarray(dicom.luma()[:64, :128]).save(buf, "JPEG2000", no_jp2=True)
    with pytest.raises(DicomInputError, match="compressed frame is 128×64") as err:
        _decode(dicom, _j2k(dicom, plain, buf.getvalue()))
    assert err.value.status_code == 422
    jpeg = dicom.build(variant="jpeg")
    frame = dicom.FRONTAL_JPEG.read_bytes()
    jpeg.PixelData = encapsulate([frame[: len(frame) // 3] + b"\0" * 50])
    with pytest.raises(DicomInputError) as err:
        _decode(dicom, jpeg)
    assert err.value.status_code == 422


def test_preamble_less_dataset_is_accepted(dicom):
    ds = dicom.build()
    expected = decode_dicom(dicom.to_bytes(ds), 64)[0]
    del ds.file_meta
    ds.preamble = None
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    assert buf.getvalue()[128:132] != b"DICM"
    tensor, meta = decode_dicom(buf.getvalue(), 64)
    assert torch.equal(tensor, expected) and meta["transfer_syntax"] == "1.2.840.10008.1.2"


# --------------------------------------------------------------------------- metadata

@pytest.mark.parametrize("position, view", [("PA", "Frontal"), ("AP", "Frontal"), ("LL", "Lateral"), ("RL", "Lateral"),
                                            ("LATERAL", "Lateral"), ("OBL", None), ("", None)])
def test_view_from_view_position(dicom, position, view):
    meta = decode_dicom(dicom.to_bytes(dicom.build(view_position=position)), 32)[1]
    assert meta["view"] == view


def test_metadata_is_the_allow_list_and_has_no_phi(dicom):
    ds = dicom.build(dicom.LATERAL_JPEG, "12bit", view_position="LL")
    ds.Manufacturer, ds.ManufacturerModelName = "Acme Medical", "XRay 3000"     # the device type, not the device
    _, meta = decode_dicom(dicom.to_bytes(ds), 32)
    assert set(meta) == META_KEYS
    assert meta == {
        "modality": "DX", "view": "Lateral", "view_position": "LL", "rows": 256, "columns": 256, "bits_stored": 12,
        "photometric": "MONOCHROME2", "transfer_syntax": "1.2.840.10008.1.2.1", "voi": "window",
        "manufacturer": "ACME MEDICAL", "model_name": "XRAY 3000",
        "sop_instance_uid": ds.SOPInstanceUID, "series_instance_uid": ds.SeriesInstanceUID,
        "study_instance_uid": ds.StudyInstanceUID,
    }
    text = repr(meta)
    for value in dicom.PHI_MARKERS:
        assert value not in text


def test_decoding_logs_and_warns_no_phi(dicom, caplog, recwarn):
    caplog.set_level(logging.DEBUG)
    for variant in dicom.VARIANTS:
        decode_dicom(dicom.to_bytes(dicom.build(variant=variant)), 32)
    for bad in (dicom.build(modality="CT"), dicom.build(pixels=False)):
        with pytest.raises(DicomInputError) as err:
            decode_dicom(dicom.to_bytes(bad), 32)
        text = str(err.value)
        assert not any(value in text for value in dicom.PHI_MARKERS)
    emitted = caplog.text + " ".join(str(w.message) for w in recwarn)
    for value in dicom.PHI_MARKERS:
        assert value not in emitted


# --------------------------------------------------------------------------- PHI stripping

def test_strip_phi_removes_every_fake_identifier(dicom):
    ds = dicom.build()
    ds.add_new(0x60000010, "US", 256)  # overlay rows: kept
    ds.add_new(0x60003000, "OW", b"\x01" * 32)  # overlay data: removed
    original = copy.deepcopy(ds)
    clean = strip_phi(ds)
    assert ds == original, "strip_phi must not modify its input"
    serialised = dicom.to_bytes(clean)
    for value in dicom.PHI_MARKERS:
        assert value.encode() not in serialised, value
        assert value not in str(clean), value
    for text in (b"FAKENESTED", b"FAKE-PRIVATE", b"FAKE VENDOR"):
        assert text not in serialised
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName",
                    "StudyDate", "StudyID"):
        assert keyword in clean and clean[keyword].value in ("", None), keyword  # Type 2: present, empty
    for keyword in ("OtherPatientIDs", "PatientAddress", "InstitutionName", "OperatorsName", "PerformingPhysicianName",
                    "StationName", "DeviceSerialNumber", "StudyDescription", "RequestAttributesSequence"):
        assert keyword not in clean, keyword
    assert 0x60003000 not in clean and 0x60000010 in clean
    assert not any(elem.tag.is_private for elem in clean.iterall())
    assert clean.PatientIdentityRemoved == "YES" and clean.DeidentificationMethod
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "ViewPosition",
                    "PixelData", "Rows", "BitsStored"):
        assert clean[keyword].value == ds[keyword].value, keyword
    assert torch.equal(decode_dicom(serialised, 64)[0], decode_dicom(dicom.to_bytes(ds), 64)[0])


def test_strip_phi_in_place_and_burned_in_annotation(dicom):
    ds = dicom.build()
    ds.BurnedInAnnotation = "YES"
    assert strip_phi(ds, in_place=True) is ds
    assert "PatientAddress" not in ds and ds.PatientIdentityRemoved == "NO"


def test_phi_tag_lists_are_dicom_keywords():
    assert not PHI_EMPTY & PHI_REMOVE
    unknown = sorted(k for k in PHI_EMPTY | PHI_REMOVE if tag_for_keyword(k) is None)
    assert not unknown
    assert {"PatientName", "PatientID", "PatientBirthDate", "ReferringPhysicianName", "AccessionNumber"} <= PHI_EMPTY
    assert {"OtherPatientIDs", "PatientAddress", "InstitutionName"} <= PHI_REMOVE


# --------------------------------------------------------------------------- errors

def test_error_type_and_status(dicom):
    assert issubclass(DicomInputError, DataError)
    with pytest.raises(DicomInputError) as err:
        decode_dicom(dicom.to_bytes(dicom.build(modality="CT")), 32)
    assert err.value.status_code == 422 and "'CT'" in str(err.value)


def test_no_pixel_data(dicom):
    with pytest.raises(DicomInputError, match="no pixel data") as err:
        decode_dicom(dicom.to_bytes(dicom.build(pixels=False)), 32)
    assert err.value.status_code == 422


def test_missing_modality(dicom):
    ds = dicom.build()
    del ds.Modality
    with pytest.raises(DicomInputError, match="no Modality") as err:
        _decode(dicom, ds)
    assert err.value.status_code == 422


@pytest.mark.parametrize("data", [b"", b"not a dicom file at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 200,
                                  bytes(range(256)) * 4], ids=["empty", "text", "png", "noise"])
def test_not_dicom_is_415(dicom, data):
    with pytest.raises(DicomInputError, match="not a DICOM file") as err:
        decode_dicom(data, 32)
    assert err.value.status_code == 415


def test_jpeg_file_is_415(dicom):
    with pytest.raises(DicomInputError) as err:
        decode_dicom(dicom.FRONTAL_JPEG.read_bytes(), 32)
    assert err.value.status_code == 415


def test_truncated_file_is_422(dicom):
    data = dicom.to_bytes(dicom.build())
    for cut in (140, len(data) - 1000):
        with pytest.raises(DicomInputError) as err:
            decode_dicom(data[:cut], 32)
        assert err.value.status_code == 422


def test_absurd_dimensions_refused_before_decoding(dicom, monkeypatch):
    def must_not_decode(*args, **kwargs):
        raise AssertionError("pixels decoded despite absurd dimensions")

    monkeypatch.setattr(sd, "pixel_array", must_not_decode)
    ds = dicom.build()
    ds.Rows = ds.Columns = 60000  # 3.6 G pixels declared, 64 KiB of data
    assert ds.Rows * ds.Columns > MAX_IMAGE_PIXELS
    with pytest.raises(DicomInputError, match="above the limit") as err:
        _decode(dicom, ds)
    assert err.value.status_code == 413


def test_compressed_frame_must_match_header(dicom, monkeypatch):
    monkeypatch.setattr(sd, "pixel_array", lambda *a, **k: pytest.fail("decoded a mismatched frame"))
    ds = dicom.build(variant="jpeg")
    ds.Rows = ds.Columns = 128  # the JPEG inside is 256×256
    with pytest.raises(DicomInputError, match="compressed frame is 256×256"):
        _decode(dicom, ds)


@pytest.mark.parametrize("change, match", [
    ({"NumberOfFrames": 2}, "multi-frame"),
    ({"Rows": 8, "Columns": 8}, "at least 16"),
    ({"PhotometricInterpretation": "PALETTE COLOR"}, "photometric"),
    ({"BitsAllocated": 32}, "bit depth"),
])
def test_unsupported_images_are_422(dicom, change, match):
    ds = dicom.build()
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    with pytest.raises(DicomInputError, match=match) as err:
        _decode(dicom, ds)
    assert err.value.status_code == 422


def test_deflated_transfer_syntax_refused(dicom):
    ds = dicom.build()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with pytest.raises(DicomInputError, match="Deflated") as err:
        _decode(dicom, ds)
    assert err.value.status_code == 422


def test_bad_size_argument(dicom):
    with pytest.raises(ValueError, match="positive"):
        decode_dicom(dicom.to_bytes(dicom.build()), 0)


def test_decoders_for_the_supported_transfer_syntaxes_are_installed():
    """pylibjpeg(-libjpeg) for JPEG Lossless / JPEG-LS, Pillow for JPEG and JPEG 2000, pydicom itself for RLE."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import (
        JPEG2000,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
    )

    for uid in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
                JPEG2000Lossless, JPEG2000, RLELossless):
        assert get_decoder(uid).is_available, f"no pixel decoder installed for {uid.name}"


@pytest.mark.parametrize("extra", [2, 64, -2], ids=["two-bytes-more", "a-row-more", "short"])
def test_native_pixel_data_must_match_the_header_exactly(dicom, extra):
    """More pixel data than Rows × Columns × bytes (pydicom would drop the excess) or less is refused, naming sizes
    only; the exact length and DICOM's odd-length pad byte are accepted."""
    ds = _with_pixels(dicom.build(variant="16bit"), _ramp())
    good = bytes(ds.PixelData)
    assert _decode(dicom, ds) is not None
    bad = copy.deepcopy(ds)
    bad.PixelData = good + b"\0" * extra if extra > 0 else good[:extra]
    with pytest.raises(DicomInputError, match=f"holds {len(good) + extra} bytes but .* is {len(good)}") as err:
        _decode(dicom, bad)
    assert err.value.status_code == 422
