"""Root logging for the service: INFO lines without PHI, DICOM UIDs redacted, chatty libraries at WARNING.

An application that embeds the service and configures logging itself should add `RedactUidFilter` to its handlers.
"""

from __future__ import annotations

import logging
import re

from serving.auth import sha256_hex

# A DICOM UID in free text: five or more dot-separated numbers (IPv4 addresses have four, versions fewer).
_UID_IN_TEXT = re.compile(r"(?<![\d.])\d+(?:\.\d+){4,}(?![\d.])")


class RedactUidFilter(logging.Filter):
    """Safety net on the log handlers: any DICOM UID in a log message (from this service or a library such as
    dicomweb_client) is replaced by `uid#<first 12 hex digits of its SHA-256>`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 — a broken format string is the logging module's to report
            return True
        redacted = _UID_IN_TEXT.sub(lambda m: "uid#" + sha256_hex(m.group(0))[:12], message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str = "info") -> None:
    """Root logging for the service: INFO lines without PHI, UIDs redacted, chatty libraries at WARNING."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactUidFilter) for f in handler.filters):
            handler.addFilter(RedactUidFilter())
    # dicomweb_client logs study/series/instance UIDs at INFO for every retrieval.
    for name in ("dicomweb_client", "httpx", "urllib3", "multipart"):
        logging.getLogger(name).setLevel(logging.WARNING)
