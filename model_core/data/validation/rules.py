"""The thresholds and allowed values of the data-validation checks (what each check tests: the package docstring)."""

from __future__ import annotations

ALLOWED_SPLITS = ("train", "val", "test")
REQUIRED_NON_EMPTY = ("uid", "image", "projection")
TEXT_COLUMNS = ("indication", "comparison", "findings", "impression")
STUDY_FIELDS = ("indication", "comparison", "findings", "impression", "mesh")
PRODUCTION_IMAGE_SIZE = 512
MIN_PIXEL_STD = 0.02            # after loading to [0, 1]; the embedded images have std >= 0.12
MAX_SATURATED_FRACTION = 0.6    # share of pixels at 0 or 255 after the 8-bit conversion; embedded data: <= 0.38
MAX_CHANNEL_SPREAD = 0.02       # mean (max channel - min channel) / 255 for RGB-stored grayscale
GRAYSCALE_MODES = ("L", "I;16", "I;16L", "I;16B", "I", "RGB")
MAX_EXAMPLES = 10               # example rows kept per failed check

# Columns whose observed bad values may be shown (enumerated or numeric, never free text or paths).
SAFE_VALUE_COLUMNS = {"projection", "split", "effective_split", "image_mode", "image_bit_depth",
                      "image_width", "image_height", "pixel_min", "pixel_max", "pixel_std",
                      "pixel_saturated", "image_channel_spread", "n_study_variants", "value"}
