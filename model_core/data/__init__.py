"""Data: the IU-format manifest contract, splits, checksums, the one image preprocessing path, MIMIC-CXR,
EDA, validation."""
