"""Error bodies never echo what the client sent (issue 12): names and values are summarised."""

from fastapi.testclient import TestClient
from test_api import W, make_app


def test_upload_errors_name_the_file_by_position_never_by_its_name(tmp_path):
    """A file name can carry identifiers: an error about an upload names files[i], not the name."""
    with TestClient(make_app(tmp_path)) as client:
        r = client.post("/api/v1/studies/1.2.3/report:upload", headers=W,
                        files=[("files", ("DOE_JOHN_MRN987654321.png", b"not an image at all" * 20, "image/png"))])
    assert r.status_code == 415 and "files[0]" in r.json()["detail"]
    assert "DOE" not in r.text and "987654321" not in r.text
