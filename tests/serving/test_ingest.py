"""serving.ingest against a real Orthanc (DICOMweb): STOW → WADO-RS → decode, PHI, 404, and PACS outages."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time

import pydicom
import pytest
import torch

from serving.dicom import decode_dicom, strip_phi
from serving.ingest import InstanceNotFound, InvalidUID, PacsClient, PacsError, PacsUnavailable, redact_url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket is closed


def _study(dicom):
    """A frontal PA (8-bit) and a lateral LL (JPEG baseline) instance of one study, in two series."""
    study = pydicom.uid.generate_uid()
    frontal = dicom.build(dicom.FRONTAL_JPEG, "8bit", view_position="PA", study_uid=study)
    lateral = dicom.build(dicom.LATERAL_JPEG, "jpeg", view_position="LL", study_uid=study)
    return study, [frontal, lateral]


def test_stow_fetch_decode_roundtrip_without_phi(orthanc, dicom, caplog):
    caplog.set_level(logging.DEBUG)
    pacs = PacsClient(orthanc.dicomweb, timeout=5)
    assert pacs.ping()
    study, instances = _study(dicom)
    assert pacs.store(instances) == [ds.SOPInstanceUID for ds in instances]

    blobs = pacs.fetch_instances(study, [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in instances])
    assert len(blobs) == 2
    results = [decode_dicom(blob, 128) for blob in blobs]
    for ds, (tensor, meta) in zip(instances, results):
        assert torch.equal(tensor, decode_dicom(dicom.to_bytes(ds), 128)[0])  # the PACS changed no pixel
        assert meta["sop_instance_uid"] == ds.SOPInstanceUID and meta["study_instance_uid"] == study
    assert [meta["view"] for _, meta in results] == ["Frontal", "Lateral"]
    assert results[1][1]["transfer_syntax"] == pydicom.uid.JPEGBaseline8Bit  # fetched as stored, not transcoded

    # The PACS holds (fake) PHI and hands it back; what we return and log has none, and strip_phi removes it.
    assert any(marker.encode() in blobs[0] for marker in dicom.PHI_MARKERS)
    for blob in blobs:
        cleaned = dicom.to_bytes(strip_phi(pydicom.dcmread(pydicom.filebase.DicomBytesIO(blob))))
        assert not any(marker.encode() in cleaned for marker in dicom.PHI_MARKERS)
    returned = repr([meta for _, meta in results]) + caplog.text
    assert orthanc.dicomweb in caplog.text  # the client did log its work…
    for marker in dicom.PHI_MARKERS:
        assert marker not in returned  # …without any patient data


def test_unknown_instance_is_instance_not_found(orthanc, dicom):
    pacs = PacsClient(orthanc.dicomweb, timeout=5)
    study, instances = _study(dicom)
    pacs.store(instances[:1])
    known = (instances[0].SeriesInstanceUID, instances[0].SOPInstanceUID)
    unknown_uid = pydicom.uid.generate_uid()
    with pytest.raises(InstanceNotFound) as err:
        pacs.fetch_instances(study, [known, (instances[0].SeriesInstanceUID, unknown_uid)])
    assert err.value.uid == unknown_uid and unknown_uid in str(err.value) and err.value.status_code == 404
    with pytest.raises(InstanceNotFound):
        pacs.fetch_instances(pydicom.uid.generate_uid(), [known])  # right instance, wrong study
    assert len(pacs.fetch_instances(study, [known])) == 1


def test_invalid_uid_is_refused_without_a_request():
    pacs = PacsClient(f"http://127.0.0.1:{_closed_port()}/dicom-web", timeout=0.5)
    with pytest.raises(InvalidUID) as err:
        pacs.fetch_instances("1.2.3", [("1.2.3.4", "../../studies")])
    assert err.value.status_code == 422 and isinstance(err.value, ValueError)


def test_closed_port_is_unavailable_quickly_and_hides_credentials(caplog):
    caplog.set_level(logging.DEBUG)
    port = _closed_port()
    pacs = PacsClient(f"http://svc-user:s3cr3t-pw@127.0.0.1:{port}/dicom-web/", timeout=0.5)
    assert pacs.url == f"http://127.0.0.1:{port}/dicom-web"
    started = time.monotonic()
    with pytest.raises(PacsUnavailable) as err:
        pacs.fetch_instances("1.2.3", [("1.2.3.4", "1.2.3.4.5")])
    assert time.monotonic() - started < 2
    assert err.value.status_code == 503 and pacs.url in str(err.value)
    assert not pacs.ping()
    for secret in ("s3cr3t-pw", "svc-user"):
        assert secret not in str(err.value) and secret not in caplog.text and secret not in repr(pacs)


def test_silent_server_times_out(caplog):
    """A PACS that accepts the connection but never answers: PacsUnavailable after about `timeout`."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accept(): the kernel completes the handshake, nobody answers
        pacs = PacsClient(f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(PacsUnavailable, match="timed out after 0.3 s"):
            pacs.fetch_instances("1.2.3", [("1.2.3.4", "1.2.3.4.5")])
        assert time.monotonic() - started < 2


class _Answer:
    def __init__(self, status: int):
        self.status, self.requests = status, 0

    def __enter__(self):
        answer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                answer.requests += 1
                self.send_response(answer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, error", [(503, PacsUnavailable), (500, PacsUnavailable), (401, PacsError)])
def test_http_errors_are_not_retried(status, error):
    with _Answer(status) as pacs_server:
        pacs = PacsClient(pacs_server.url, timeout=2)
        started = time.monotonic()
        with pytest.raises(error, match=f"HTTP {status}") as err:
            pacs.fetch_instances("1.2.3", [("1.2.3.4", "1.2.3.4.5")])
        assert time.monotonic() - started < 2 and pacs_server.requests == 1
        assert err.value.status_code == (503 if status >= 500 else 502)


def test_stopped_pacs_is_unavailable_and_nothing_is_lost(orthanc, dicom):
    """Kill the PACS: fetches fail fast with PacsUnavailable; restart it: the same client gets the same bytes.

    SIGKILL (a crash, and faster than Orthanc's 3.5 s graceful stop): what STOW-RS acknowledged must survive it.
    """
    pacs = PacsClient(orthanc.dicomweb, timeout=1)
    study, instances = _study(dicom)
    pacs.store(instances)
    refs = [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in instances]
    before = pacs.fetch_instances(study, refs)
    orthanc.stop(kill=True)
    try:
        started = time.monotonic()
        with pytest.raises(PacsUnavailable) as err:
            pacs.fetch_instances(study, refs)
        assert time.monotonic() - started < 2
        assert orthanc.dicomweb in str(err.value)
        assert not pacs.ping()
    finally:
        orthanc.start()
    assert pacs.ping()
    assert pacs.fetch_instances(study, refs) == before


def test_url_validation_and_redaction():
    assert redact_url("https://u:p@pacs.example:8443/dicom-web?token=x#f") == "https://pacs.example:8443/dicom-web"
    with pytest.raises(ValueError):
        PacsClient("ftp://pacs.example/dicom-web")
    with pytest.raises(ValueError):
        PacsClient("http://pacs.example/dicom-web?token=secret")
    with pytest.raises(ValueError):
        PacsClient("http://pacs.example/dicom-web", timeout=0)
    assert PacsClient("http://pacs.example/dicom-web", auth=("a", "b"))._client._session.auth == ("a", "b")
