"""Admission before decoding (issue 12): images are sized from their headers and reserve that much of one
in-flight decode budget before any pixel is decoded; 32 concurrent 8192×8192 PNGs (a few KB each) stay under it."""

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from test_api import STUDY, W, fake_dicom, make_app

from serving import dicom as dicom_io
from serving import images
from serving.admission import DecodeBudget, DecodeBudgetFull, image_decode_bytes, request_decode_bytes
from serving.errors import BadInput, TooLarge, UnsupportedMedia

MIB = 1024 * 1024
SIDE = 8192


@pytest.fixture(scope="module")
def large_png() -> bytes:
    """An 8192×8192 grayscale PNG: 64 MiB decoded, a few KB sent."""
    buf = io.BytesIO()
    Image.new("L", (SIDE, SIDE), 120).save(buf, "PNG")
    return buf.getvalue()


def _upload(client, data: bytes):
    return client.post(f"/api/v1/studies/{STUDY}/report:upload", headers=W,
                       files=[("files", ("cxr.png", data, "image/png"))])


def test_estimates_come_from_headers(large_png, dicom):
    assert len(large_png) < 200_000
    assert image_decode_bytes("files[0]", images.PNG, large_png) == SIDE * SIDE            # L: 1 byte a pixel
    rgb = io.BytesIO()
    Image.new("RGB", (100, 50)).save(rgb, "JPEG")
    assert image_decode_bytes("files[1]", images.JPEG, rgb.getvalue()) == 100 * 50 * 5    # RGBX + the L copy
    ds = dicom.build(variant="16bit")
    expected = ds.Rows * ds.Columns * (2 * 2 + 32)
    assert dicom_io.decoded_bytes(dicom.to_bytes(ds)) == expected
    # a DICOM without a readable header reserves its own size; the decoder refuses it before its pixels
    assert image_decode_bytes("files[0]", images.DICOM, fake_dicom()) == len(fake_dicom())
    with pytest.raises(UnsupportedMedia, match=r"files\[1\]"):
        request_decode_bytes([("files[0]", images.PNG, large_png), ("files[1]", None, b"notes")])
    assert request_decode_bytes([("files[0]", images.JPEG, rgb.getvalue()), ("files[1]", images.PNG, large_png)]
                                ) == (SIDE * SIDE, "files[1]")
    bomb = io.BytesIO()
    Image.new("L", (9000, 9000)).save(bomb, "PNG")
    with pytest.raises(BadInput, match="9000×9000 pixels, above the limit") as caught:
        image_decode_bytes("files[0]", images.PNG, bomb.getvalue())
    assert caught.value.status_code == 413


def test_the_budget_refuses_past_its_size_and_releases():
    budget = DecodeBudget(100)
    with budget.reserve(60):
        with pytest.raises(DecodeBudgetFull) as caught:
            with budget.reserve(50):
                pass
        assert caught.value.status_code == 503 and caught.value.retry_after >= 1
        with budget.reserve(40):
            assert budget.in_flight == 100
    assert budget.in_flight == 0 and budget.peak == 100
    with pytest.raises(TooLarge, match="whole decode budget"):
        with budget.reserve(101, "files[0]"):
            pass


def test_32_concurrent_large_pngs_stay_under_the_budget(tmp_path, large_png):
    budget = 2 * SIDE * SIDE + MIB                       # room for two at once
    with TestClient(make_app(tmp_path, decode_budget_bytes=budget)) as client:
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: _upload(client, large_png), range(32)))
        service = client.app.state.service
        assert service.decode_budget.peak <= budget and service.decode_budget.in_flight == 0
        assert service.decode_budget.peak >= SIDE * SIDE               # they were admitted, one by one or two
        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {200, 503} and 200 in statuses
        refused = [r for r in answers if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and "decode budget" in r.json()["detail"] for r in refused)
        metrics = {sample.name: sample.value for family in text_string_to_metric_families(client.get("/metrics").text)
                   for sample in family.samples}
        assert metrics["rrg_decode_budget_rejections_total"] == len(refused)
        assert metrics["rrg_decode_bytes_peak"] == service.decode_budget.peak


def test_a_request_is_refused_with_503_while_the_budget_is_taken_and_413_above_it(tmp_path, large_png):
    with TestClient(make_app(tmp_path, decode_budget_bytes=SIDE * SIDE + MIB)) as client:
        budget = client.app.state.service.decode_budget
        with budget.reserve(2 * MIB):                   # another request is decoding
            r = _upload(client, large_png)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert _upload(client, large_png).status_code == 200
    with TestClient(make_app(tmp_path, decode_budget_bytes=32 * MIB)) as client:
        r = _upload(client, large_png)
        assert r.status_code == 413 and r.json()["detail"].startswith("files[0]: decoding would take about 64 MiB")
