"""Body limits that hold whatever the client sends (issue 12): the JSON limit applies to chunked bodies (stopped at
the limit, the rest never read), every multipart part is capped (a `request` part sent as a file too), and a 500
keeps the keep-alive connection."""

import http.client
import json

from fastapi.testclient import TestClient
from live_server import live_server
from test_api import STUDY, W, body, make_app, png_bytes

from serving.middleware import MAX_JSON_BYTES

CHUNK = 64 * 1024


def _chunks(total: int, chunk: int = CHUNK):
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        sent += n
        yield b" " * n


def test_a_chunked_json_body_above_the_limit_is_413(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        r = client.post(f"/api/v1/studies/{STUDY}/report", content=_chunks(2 * 1024 * 1024),
                        headers={**W, "Content-Type": "application/json"})
        assert r.status_code == 413 and f"{MAX_JSON_BYTES}-byte limit" in r.json()["detail"]
        assert r.headers["connection"] == "close"          # the rest of the body is not read
        # a chunked body under the limit is read as usual
        r = client.post(f"/api/v1/studies/{STUDY}/report", content=iter([json.dumps(body()).encode()]),
                        headers={**W, "Content-Type": "application/json"})
        assert r.status_code == 200


def test_reading_stops_at_the_limit(tmp_path):
    """Driven at the ASGI level with a counting `receive`: the app never asked for more than the limit plus one
    chunk of a 2 MiB chunked body."""
    app = make_app(tmp_path)
    received = [0]
    chunks = _chunks(2 * 1024 * 1024)
    sent = []

    async def receive():
        data = next(chunks, None)
        received[0] += len(data or b"")
        return {"type": "http.request", "body": data or b"", "more_body": data is not None}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": f"/api/v1/studies/{STUDY}/report", "raw_path": b"",
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1), "http_version": "1.1", "asgi": {"version": "3.0"},
             "headers": [(b"authorization", W["Authorization"].encode()), (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked")]}

    with TestClient(app) as client:                         # the service started (lifespan)
        client.portal.call(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert MAX_JSON_BYTES < received[0] <= MAX_JSON_BYTES + CHUNK


def test_a_request_part_sent_as_a_file_is_capped_and_named_by_its_field(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        big = b'{"clinical_context": {"indication": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
        r = client.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                        files=[("files", ("a.png", png_bytes(), "image/png")),
                               ("request", ("DOE_JOHN_MRN987654321.json", big, "application/json"))])
        assert r.status_code == 413 and "`request` part" in r.json()["detail"]
        assert "DOE_JOHN" not in r.text
        # the same part sent as a field
        r = client.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                        files=[("files", ("a.png", png_bytes(), "image/png"))], data={"request": big.decode()})
        assert r.status_code == 413 and "`request` part" in r.json()["detail"]
        # a small one sent as a file is read as usual
        small = json.dumps({"report_template": "impression"}).encode()
        r = client.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                        files=[("files", ("a.png", png_bytes(), "image/png")),
                               ("request", ("options.json", small, "application/json"))])
        assert r.status_code == 200


def test_a_500_keeps_the_keep_alive_connection(tmp_path):
    app = make_app(tmp_path)
    service = app.state.service

    def broken_store(report_id, record):
        raise KeyError("a bug")                             # anything unexpected: an internal error

    with live_server(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        payload = json.dumps(body())
        headers = {**W, "Content-Type": "application/json"}
        real_store, service.store = service.store, broken_store
        conn.request("POST", f"/api/v1/studies/{STUDY}/report", payload, headers)
        first = conn.getresponse()
        detail = json.loads(first.read())["detail"]
        assert first.status == 500 and detail.startswith("internal error (reference ")
        assert first.getheader("connection") != "close"
        sock = conn.sock
        service.store = real_store
        conn.request("POST", f"/api/v1/studies/{STUDY}/report", payload, headers)
        second = conn.getresponse()
        assert second.status == 200 and "report_id" in json.loads(second.read())
        assert conn.sock is sock                            # the same connection carried both
        conn.close()
