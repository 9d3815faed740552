"""Names shared by the auditors' page tests and their fixtures (tests/auditors/conftest.py)."""

MODEL = "rrg-auditors-test"
AUDITOR_TOKEN = "auditor-token-0123456789abcdef"     # holds packet.read
READER_TOKEN = "reader-token-0123456789abcdef"       # a known token without packet.read
