"""Data-validation gate for IU-format datasets: a Great Expectations (1.x) suite over the manifest.

`validate_dataset(manifest_path, images_root, out_dir, ...)` reads the manifest (the contract of
`model_core.data`), derives per-study, per-split and per-image columns, validates them with GE
expectations on pandas dataframes and writes a JSON and an HTML report into `out_dir`.
`raise_on_failure(result)` turns a failed validation into a pipeline stop (`DataValidationError`,
a `DataError`).

What is checked (the `check` id of each expectation in brackets; every one is a GE expectation):

Manifest contract (frame "manifest", one row per image)
  * the manifest has rows                                           [contract.rows]
  * every column of `MANIFEST_COLUMNS` exists                       [contract.column_present]
  * uid, image, projection are non-null and non-blank               [contract.non_empty]
Per study (frame "studies", one row per uid)
  * findings OR impression is non-empty                             [contract.report_non_empty]
  * the study-level fields (indication, comparison, findings, impression, mesh) are the same on
    every image row of the study                                    [contract.study_consistent]
Splits (effective split from `model_core.data.study_splits`: splits.csv beside the images wins;
always over the whole manifest, whatever `splits=` selects)
  * every row has an effective split, in {train, val, test}         [splits.assigned, splits.allowed]
  * the manifest's own `split` column is in {train, val, test}      [labels.split]
    (frame "split_rows": one row per image)
  * each study is in exactly one split (frame "splits": distinct (uid, split) pairs of the
    manifest and of splits.csv; uid unique)                         [splits.disjoint]
  * no image file is listed twice, and no identical image file (same SHA-256) is in two
    splits (frame "image_content", over the images decoded)         [images.unique_path, splits.disjoint_content]
Labels
  * projection in {Frontal, Lateral}                                [labels.projection]
  * the 14 MeSH-derived CheXpert labels (`model_core.labels.mesh_to_chexpert`) in {0, 1} (frame
    "labels": one row per study and label; examples name the label)  [labels.mesh_chexpert]
PHI in report text (indication, comparison, findings, impression), see `PHI_PATTERNS` (frame
"report_text": each distinct text of a study's section once; examples name the section)
  * titled names ("Dr. Smith", "Mr Jones", "DR. JONES"), MRN / accession / patient-id numbers,
    any run of 6+ digits, date-of-birth phrases followed by a number, full dates (d/m/yyyy,
    d-m-yy, yyyy-mm-dd, "March 3, 1950"), phone numbers, SSN-shaped numbers, e-mail addresses.
    The collection's own `XXXX` masks pass ("Dr. XXXX", "DOB: XXXX"), and so does clinical
    text such as "T12 vertebral body", "5 mm nodule", "2 cm", "1-1/2 weeks", "ratio of
    16.2/24.7". Month/day fragments whose year is masked ("11/7/ XXXX") are not flagged: a
    d/m pattern cannot be told from a ratio ("19/33").                [phi.<pattern>]
Images (frame "manifest"; computed columns validated by GE expectations)
  * the path stays inside `images_root`                             [images.in_root]
  * the file exists (every row, always)                             [images.exists]
  * it decodes fully (PIL; truncated files fail) under the same decompression-bomb guard as
    `model_core.data.load_image`                                    [images.decodable]
  * grayscale-sane: PIL mode L, I;16*, I or RGB (RGB only with identical channels: mean
    per-pixel channel spread <= `MAX_CHANNEL_SPREAD`), bit depth 8 or 16
                                                                    [images.mode, images.bit_depth, images.grayscale]
  * width and height >= `min_image_size` (the model input size)     [images.min_size]
  * after the project's one preprocessing path (`model_core.data.pil_to_tensor` at
    `min_image_size`): values within [0, 1] and pixel std >= `MIN_PIXEL_STD` (not blank); and at
    most `MAX_SATURATED_FRACTION` of the pixels at 0 or 255 after load_image's 8-bit conversion at
    native size (catches a 16-bit image that `convert("L")` clips to white)
                                                      [images.range, images.not_blank, images.not_saturated]
  Decoding uses a thread pool. With `sample_images=N` only a seeded sample of N image rows is
  decoded (existence is still checked for every row); the statistics record the mode, seed and
  the sampled rows.

Reports: failures name the check, the GE expectation type, the frame and column, the number of
failing rows and up to `MAX_EXAMPLES` example rows as CSV line numbers and study uids (plus the
report section or label name, in those frames). Report text (and image paths, which may carry
identifiers) never appears in failures, logs or reports; observed bad values are shown only for
enumerated or numeric columns (projection, split, labels, image size/mode/statistics), and only
when short (a shifted CSV can put report text anywhere).

Manifest-level problems that make validation impossible (file missing, not a CSV, splits.csv not
exactly `uid,split`) raise `DataError`; every data problem is a failed expectation instead.

Modules: gate.py (`validate_dataset`), dataset.py (the frames), images.py (the image columns),
suites.py (the GE suites and how they run), rules.py (thresholds and allowed values), report.py
(`ValidationResult`, the failure message, the JSON and HTML reports).
"""

from model_core.data.validation.gate import validate_dataset
from model_core.data.validation.report import (
    REPORT_HTML,
    REPORT_JSON,
    DataValidationError,
    ValidationResult,
    raise_on_failure,
)
from model_core.data.validation.rules import (
    GRAYSCALE_MODES,
    MAX_CHANNEL_SPREAD,
    MAX_EXAMPLES,
    MAX_SATURATED_FRACTION,
    MIN_PIXEL_STD,
    PRODUCTION_IMAGE_SIZE,
)
from model_core.phi import PHI_PATTERNS

__all__ = ["GRAYSCALE_MODES", "MAX_CHANNEL_SPREAD", "MAX_EXAMPLES", "MAX_SATURATED_FRACTION", "MIN_PIXEL_STD",
           "PHI_PATTERNS", "PRODUCTION_IMAGE_SIZE", "REPORT_HTML", "REPORT_JSON", "DataValidationError",
           "ValidationResult", "raise_on_failure", "validate_dataset"]
