"""PACS access over DICOMweb (QIDO-RS, WADO-RS, STOW-RS) with `dicomweb_client`.

    pacs = PacsClient("https://pacs.example.org/dicom-web", timeout=10, auth=("user", "secret"))
    blobs = pacs.fetch_instances(study_uid, [(series_uid, sop_uid), ...])   # Part 10 bytes → serving.dicom
    pacs.ping()                                                            # → bool, for readiness checks
    pacs.store([dataset, ...])                                             # STOW-RS (tests, tooling)

Errors (all `PacsError`, each with an HTTP-ready `status_code`):
  PacsUnavailable  503  connection refused, DNS failure, timeout, broken transfer, or a 5xx answer
  InstanceNotFound 404  the PACS answered 404 for the instance; the message names the SOP Instance UID
  InvalidUID       422  a UID that is not a DICOM UID (digits and dots, at most 64 characters); no request is made
  PacsError        502  anything else the PACS got wrong (401/403, other 4xx, an unreadable answer)
Messages name the PACS by its URL without credentials or query string (`PacsClient.url`); credentials in the URL
(`https://user:pw@host/...`) are moved to HTTP basic auth and never logged. No request is retried here (the
dicomweb_client default would retry 503/504/429 up to 5 times with exponential back-off): the caller decides,
and a down PACS fails within `timeout` seconds per connection attempt / read.

Instances are retrieved in the transfer syntax the PACS stores them in (`application/dicom; transfer-syntax=*`),
so the PACS never transcodes; `serving.dicom.decode_dicom` decodes the compressed syntaxes it supports.
The bytes returned are the instance as the PACS holds it, PHI included: pass them to `decode_dicom` (whose
metadata is PHI-free) and run `serving.dicom.strip_phi` before storing or logging any dataset.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class PacsError(RuntimeError):
    """The PACS request failed; `status_code` is the HTTP status the service should answer."""

    status_code = 502


class PacsUnavailable(PacsError):
    """The PACS cannot be reached, timed out or answered 5xx (→ 503)."""

    status_code = 503


class InstanceNotFound(PacsError):
    """The PACS has no such instance (→ 404). `uid` is the SOP Instance UID."""

    status_code = 404

    def __init__(self, message: str, uid: str):
        super().__init__(message)
        self.uid = uid


class InvalidUID(PacsError, ValueError):
    """A UID that is not a valid DICOM UID (→ 422); nothing was sent to the PACS."""

    status_code = 422


def redact_url(url: str) -> str:
    """The URL without user:password and without query string or fragment (safe to log or show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_uid(uid: str, what: str = "UID") -> str:
    if not isinstance(uid, str) or not uid or len(uid) > 64 or not _UID_RE.match(uid):
        shown = repr(uid)[:80]
        raise InvalidUID(f"invalid {what} {shown}: a DICOM UID is digits and dots, at most 64 characters")
    return uid


class PacsClient:
    """A DICOMweb PACS at `url` (its DICOMweb root, e.g. http://host:8042/dicom-web)."""

    def __init__(self, url: str, timeout: float = 10, auth=None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PACS URL must be http(s)://host[:port]/path, got {redact_url(url)!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"PACS URL must not have a query string or fragment: {redact_url(url)!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if parts.username is not None and auth is None:
            auth = (requests.utils.unquote(parts.username), requests.utils.unquote(parts.password or ""))
        self.url = redact_url(url).rstrip("/")
        self.timeout = float(timeout)
        session = requests.Session()
        session.auth = auth
        self._client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
        self._client.set_http_retry_params(retry=False)

    def __repr__(self) -> str:
        return f"PacsClient({self.url!r}, timeout={self.timeout})"

    # ------------------------------------------------------------------ WADO-RS

    def fetch_instances(self, study_uid: str, refs: Sequence[tuple[str, str]]) -> list[bytes]:
        """WADO-RS: each (series_uid, sop_instance_uid) of the study → DICOM Part 10 bytes, in `refs` order.

        All or nothing: the first failure raises (InstanceNotFound, PacsUnavailable, PacsError, InvalidUID).
        """
        check_uid(study_uid, "Study Instance UID")
        refs = [(check_uid(series, "Series Instance UID"), check_uid(sop, "SOP Instance UID")) for series, sop in refs]
        blobs = []
        for series_uid, sop_uid in refs:
            try:
                ds = self._client.retrieve_instance(study_uid, series_uid, sop_uid,
                                                    media_types=(("application/dicom", "*"),))
            except Exception as exc:
                raise self._translate(exc, f"retrieving instance {sop_uid}", sop_uid=sop_uid,
                                      detail=f" (series {series_uid}, study {study_uid})") from exc
            blobs.append(_to_part10(ds))
        log.info("fetched %d instance(s) of study %s from PACS %s", len(blobs), study_uid, self.url)
        return blobs

    # ------------------------------------------------------------------ QIDO-RS

    def ping(self) -> bool:
        """True when the PACS answers a QIDO-RS study search (limit 1); False (and a warning) otherwise."""
        try:
            self._client.search_for_studies(limit=1, fields=("StudyInstanceUID",))
        except Exception as exc:  # noqa: BLE001 — a failed ping is logged, never raised (readiness reports it)
            log.warning("%s", self._translate(exc, "ping"))
            return False
        return True

    # ------------------------------------------------------------------ STOW-RS

    def store(self, datasets: Iterable[Dataset | bytes]) -> list[str]:
        """STOW-RS the datasets (or Part 10 bytes) as they are; returns the stored SOP Instance UIDs.

        Nothing is stripped here: this is for tests and tooling that seed a PACS. Raises PacsError when the
        PACS reports a failed instance, PacsUnavailable when it cannot be reached.
        """
        items = [pydicom.dcmread(io.BytesIO(d)) if isinstance(d, (bytes, bytearray)) else d for d in datasets]
        if not items:
            return []
        try:
            response = self._client.store_instances(items)
        except Exception as exc:
            raise self._translate(exc, f"storing {len(items)} instance(s)") from exc
        failed = [str(item.get("ReferencedSOPInstanceUID", "?")) for item in response.get("FailedSOPSequence", [])]
        if failed:
            raise PacsError(f"PACS {self.url} refused {len(failed)} of {len(items)} instance(s): {', '.join(failed)}")
        stored = [str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])
                  if "ReferencedSOPInstanceUID" in item]
        log.info("stored %d instance(s) on PACS %s", len(stored), self.url)
        return stored

    # ------------------------------------------------------------------ errors

    def _translate(self, exc: BaseException, action: str, sop_uid: str | None = None, detail: str = "") -> PacsError:
        where = f"PACS {self.url}"
        if isinstance(exc, PacsError):
            return exc
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status == 404 and sop_uid is not None:
                return InstanceNotFound(f"instance {sop_uid} not found on {where}{detail}", uid=sop_uid)
            if status >= 500:
                return PacsUnavailable(f"{where} failed {action}: HTTP {status}")
            if status in (401, 403):
                return PacsError(f"{where} refused access while {action}: HTTP {status} (check the credentials)")
            return PacsError(f"{where} rejected {action}: HTTP {status}")
        if isinstance(exc, requests.Timeout):
            return PacsUnavailable(f"{where} timed out after {self.timeout:g} s while {action}")
        if isinstance(exc, requests.ConnectionError):
            return PacsUnavailable(f"{where} is unreachable while {action} (connection refused or failed)")
        if isinstance(exc, requests.RequestException):
            return PacsUnavailable(f"{where}: transfer failed while {action} ({type(exc).__name__})")
        return PacsError(f"{where}: unexpected answer while {action} ({type(exc).__name__}: {_short(exc)})")


def _to_part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "…"
