"""Error bodies never echo what the client sent (issue 12): names and values are summarised, ids are not repeated,
and no Python object repr or memory address reaches a body."""

import re

import pytest
from fastapi.testclient import TestClient
from test_api import STUDY, FakePacs, R, W, body, fake_dicom, make_app, png_bytes

from serving.errors import MAX_DETAIL_CHARS, MAX_LISTED_ERRORS, UNKNOWN_NAME, describe_validation_errors

PHI = "DOE_JOHN_MRN987654321"
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}| object at ")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(make_app(tmp_path_factory.mktemp("error-bodies"))) as c:
        yield c


def _clean(r, *secrets: str) -> None:
    """The answer is an error whose body quotes none of `secrets` and no object address."""
    assert 400 <= r.status_code < 600, r.text
    for secret in secrets:
        assert secret not in r.text
    assert not ADDRESS.search(r.text), r.text


def test_upload_errors_name_the_file_by_position_never_by_its_name(client):
    """A file name can carry identifiers: an error about an upload names files[i], not the name."""
    r = client.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                    files=[("files", ("DOE_JOHN_MRN987654321.png", b"not an image at all" * 20, "image/png"))])
    assert r.status_code == 415 and "files[0]" in r.json()["detail"]
    _clean(r, "DOE", "987654321")


@pytest.mark.parametrize("suffix", ["", "/text", "/fhir", "/heatmaps/pneumothorax"])
def test_a_30_kb_report_id_is_not_repeated_in_the_404(client, suffix):
    report_id = "A1b2" * 7500                                          # 30 000 characters
    r = client.get(f"/api/v1/reports/{report_id}{suffix}", headers=R)
    assert r.status_code == 404 and r.json()["detail"].startswith("report not found")
    assert len(r.content) < 200
    _clean(r, report_id[:64])


def test_a_validation_error_does_not_repeat_a_phi_looking_value(client):
    payload = body()
    payload["clinical_context"]["age"] = PHI                            # wrong type
    payload["images"][0]["view"] = PHI                                  # not a view
    payload["clinical_context"]["prior_studies"][0]["date"] = PHI       # not a date
    r = client.post(f"/api/v1/studies/{STUDY}/report", json=payload, headers=W)
    assert r.status_code == 422
    locations = [e["loc"] for e in r.json()["errors"]]
    assert ["body", "clinical_context", "age"] in locations and ["body", "images", "0", "view"] in locations
    assert all(set(e) == {"loc", "msg", "type"} for e in r.json()["errors"])   # no input, ctx or url
    _clean(r, PHI, "987654321")


def test_an_unknown_key_is_not_named(client):
    """A key the API does not define is the client's text (it may be an identifier): summarised, not quoted."""
    r = client.post(f"/api/v1/studies/{STUDY}/report", json={**body(), PHI: 1}, headers=W)
    assert r.status_code == 422
    assert r.json()["errors"] == [{"loc": ["body", UNKNOWN_NAME], "msg": "unknown field (not part of the API)",
                                   "type": "extra_forbidden"}]
    _clean(r, PHI)


def test_upload_request_part_and_unknown_form_parts_are_not_echoed(client):
    r = client.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                    files=[("files", ("a.png", png_bytes(), "image/png"))],
                    data={"request": '{"clinical_context": {"age": "%s"}, "%s": 1}' % (PHI, PHI + "X")})
    assert r.status_code == 422 and "clinical_context.age" in r.json()["detail"]
    _clean(r, PHI)
    r = client.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                    files=[("files", ("a.png", png_bytes(), "image/png"))], data={PHI: "x"})
    assert r.status_code == 422 and "1 unknown form part(s)" in r.json()["detail"]
    _clean(r, PHI)


def test_a_message_that_quotes_its_input_is_replaced_by_the_error_type():
    """Some pydantic messages quote the input (a tagged union's tag, …): only the type is kept then."""
    errors = [{"type": "union_tag_invalid", "loc": ("body", "kind"), "input": PHI,
               "msg": f"Input tag '{PHI}' found using 'kind' does not match any of the expected tags"}]
    detail, listed = describe_validation_errors(errors, names={"kind"})
    assert detail == "body.kind: invalid value (union_tag_invalid)" and PHI not in str(listed)


def test_many_validation_errors_are_capped():
    errors = [{"type": "missing", "loc": ("body", "images", i, "view"), "msg": "Field required", "input": {}}
              for i in range(100)]
    detail, listed = describe_validation_errors(errors)
    assert len(listed) == MAX_LISTED_ERRORS and len(detail) <= MAX_DETAIL_CHARS
    assert detail.endswith("… (truncated)") or f"and {100 - MAX_LISTED_ERRORS} more" in detail


class ReprLeakingPacs(FakePacs):
    """A PACS client that lets a library's connection error through, as `requests` words it: with an object repr."""

    def fetch_instances(self, study_uid, pairs):
        raise ConnectionError(f"Max retries exceeded (Caused by NewConnectionError('{object()!r}: Failed to "
                              "establish a new connection'))")


def test_no_object_address_reaches_an_error_body(tmp_path):
    def decode_with_repr(data, size):
        raise ValueError(f"cannot read {object()!r}")                 # a decoder's error text with a repr

    with TestClient(make_app(tmp_path, pacs=ReprLeakingPacs(), decode_dicom=decode_with_repr)) as c:
        r = c.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
        assert r.status_code == 503 and r.json()["detail"].startswith("PACS unavailable")
        _clean(r)
        r = c.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                   files=[("files", ("x.dcm", fake_dicom(), "application/dicom"))])
        assert r.status_code == 422 and r.json()["detail"].startswith("files[0]: cannot read <object>")
        _clean(r)
