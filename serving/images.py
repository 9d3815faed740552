"""Uploaded files: recognise DICOM / PNG / JPEG by their bytes, and decode PNG/JPEG safely.

PNG and JPEG go through `model_core.data.pil_to_tensor`, the project's one preprocessing path (grayscale,
bilinear resize to the model's input size, [0, 1]). The pixel count is checked from the header, before any
pixel is decoded: `model_core.data.MAX_IMAGE_PIXELS` (8192×8192) is the limit. PIL's own decompression-bomb limit
is set to the same number explicitly (PIL refuses more than twice it while reading the header; between the two our
own check, which names the size, refuses it), and `decoded_bytes` estimates an image's decoding memory from its
header for the service's admission (serving.admission).
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from model_core.data.images import MAX_IMAGE_PIXELS, pil_to_tensor

# Explicit, not PIL's default (~89 Mpx): the project's limit. PIL warns above it and raises above twice it; the
# warning is silenced because open_image refuses those images itself, naming their size (a filter, not
# warnings.catch_warnings, which is not thread-safe and images are decoded in several threads at once).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

DICOM, PNG, JPEG = "dicom", "png", "jpeg"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class ImageInputError(ValueError):
    """An uploaded file that cannot be used; `status_code` is the HTTP status, the message names the file."""

    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.status_code = status_code


def sniff(data: bytes, content_type: str | None = None) -> str | None:
    """'dicom', 'png', 'jpeg' or None, from the file's signature (content type only for preamble-less DICOM)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return DICOM
    if data.startswith(_PNG_MAGIC):
        return PNG
    if data.startswith(_JPEG_MAGIC):
        return JPEG
    if content_type and content_type.split(";")[0].strip().lower() == "application/dicom":
        return DICOM
    return None


def open_image(data: bytes, name: str = "file") -> Image.Image:
    """PNG/JPEG bytes → a lazily opened PIL image (header read, no pixel decoded; close it), checked: a PNG or
    JPEG, within MAX_IMAGE_PIXELS, at least 16×16. ImageInputError naming `name` otherwise."""
    kind = sniff(data)
    if kind not in (PNG, JPEG):
        raise ImageInputError(f"{name}: not a PNG or JPEG image", 415)
    try:
        im = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    except Image.DecompressionBombError:
        raise ImageInputError(f"{name}: image too large: more than twice the limit of {MAX_IMAGE_PIXELS} pixels "
                              "(8192×8192)", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{name}: corrupt {kind.upper()} image: {exc}") from None
    width, height = im.size
    problem = None
    if width * height > MAX_IMAGE_PIXELS:
        problem = ImageInputError(f"{name}: image is {width}×{height} pixels, above the limit of "
                                  f"{MAX_IMAGE_PIXELS} pixels (8192×8192)", 413)
    elif width < 16 or height < 16:
        problem = ImageInputError(f"{name}: image is {width}×{height} pixels; at least 16×16 is required")
    if problem is not None:
        im.close()
        raise problem
    return im


def decoded_bytes(data: bytes, name: str = "file") -> int:
    """The memory decoding a PNG/JPEG takes, estimated from its header (no pixel decoded): width × height ×
    (PIL's bytes per pixel for the mode + the working copies `pil_to_tensor` makes). ImageInputError as open_image."""
    with open_image(data, name) as im:
        width, height = im.size
        return width * height * _bytes_per_pixel(im.mode)


def _bytes_per_pixel(mode: str) -> int:
    if mode == "L":
        return 1                    # decoded, then resized: no full-size copy
    if mode in ("1", "P"):
        return 2                    # + the conversion to L
    if mode.startswith("I;16"):
        return 2 + 8                # + a float32 array and a float (F) image of it
    if mode in ("I", "F"):
        return 4 + 8
    return 4 + 1                    # multi-band images are 4 bytes a pixel in PIL, + the conversion to L


def decode_image(data: bytes, size: int, name: str = "file") -> torch.Tensor:
    """PNG/JPEG bytes → (1, size, size) float32 in [0, 1]; ImageInputError naming `name` otherwise."""
    kind = sniff(data)
    with open_image(data, name) as im:
        try:
            im.load()
            return pil_to_tensor(im, size)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageInputError(f"{name}: corrupt {kind.upper()} image: {exc}") from None
