"""Uploaded files: recognise DICOM / PNG / JPEG by their bytes, and decode PNG/JPEG safely.

PNG and JPEG go through `model_core.data.pil_to_tensor`, the project's one preprocessing path (grayscale,
bilinear resize to the model's input size, [0, 1]). The pixel count is checked from the header, before any
pixel is decoded: `model_core.data.MAX_IMAGE_PIXELS` (8192×8192) is the limit, and PIL's own decompression-bomb
error for far larger images is reported the same way.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from model_core.data.images import MAX_IMAGE_PIXELS, pil_to_tensor

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


def decode_image(data: bytes, size: int, name: str = "file") -> torch.Tensor:
    """PNG/JPEG bytes → (1, size, size) float32 in [0, 1]; ImageInputError naming `name` otherwise."""
    kind = sniff(data)
    if kind not in (PNG, JPEG):
        raise ImageInputError(f"{name}: not a PNG or JPEG image", 415)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{name}: image too large ({exc}); the limit is {MAX_IMAGE_PIXELS} pixels "
                              "(8192×8192)", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{name}: corrupt {kind.upper()} image: {exc}") from None
    with im:
        width, height = im.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageInputError(f"{name}: image is {width}×{height} pixels, above the limit of "
                                  f"{MAX_IMAGE_PIXELS} pixels (8192×8192)", 413)
        if width < 16 or height < 16:
            raise ImageInputError(f"{name}: image is {width}×{height} pixels; at least 16×16 is required")
        try:
            im.load()
            return pil_to_tensor(im, size)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageInputError(f"{name}: corrupt {kind.upper()} image: {exc}") from None
