"""GET /api/v1/reports/{id}/heatmaps/{finding}: a PNG overlay per view, scope report.read, from the model inputs the
report keeps (and only as long as the report is kept)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from model_core.data.images import load_image
from model_core.data.manifest import EMBEDDED_ROOT
from serving.app import create_app
from serving.errors import NotFound
from serving.heatmaps import HEATMAP_INPUTS, HeatmapRenderer, decode_inputs, encode_inputs, finding_label

WRITER = "writer-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
TOKENS = f"{WRITER}:report.write,{READER}:report.read"
FRONTAL = EMBEDDED_ROOT / "images" / "1_IM-0001-4001.dcm.jpg"


def test_inputs_round_trip_within_8_bit_rounding():
    images = torch.rand(2, 1, 32, 32)
    encoded = encode_inputs(images)
    assert len(encoded) == 2 and all(isinstance(e, str) for e in encoded)
    assert (decode_inputs(encoded) - images).abs().max() <= 0.5 / 255 + 1e-6


def test_findings_are_named_as_in_urls():
    assert finding_label("pleural-effusion") == finding_label("Pleural Effusion") == "Pleural Effusion"
    with pytest.raises(NotFound, match="unknown finding") as info:
        finding_label("<script>")
    assert "<script>" not in str(info.value)
    with pytest.raises(NotFound, match="unknown finding"):
        finding_label("no-finding")


def test_renderer_draws_one_panel_per_view(tiny_model_dir):
    images = torch.stack([load_image(FRONTAL, 32), load_image(FRONTAL, 32)])
    png = HeatmapRenderer(tiny_model_dir, size=64).render({HEATMAP_INPUTS: encode_inputs(images)}, "fracture")
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.size == (128, 64)
    with pytest.raises(NotFound, match="kept no model inputs"):
        HeatmapRenderer(tiny_model_dir).render({}, "fracture")


def test_the_route_serves_a_png_to_report_readers_only(tmp_path, tiny_model_dir):
    app = create_app(tiny_model_dir, tokens=TOKENS, audit_log=tmp_path / "audit.jsonl",
                     report_store=tmp_path / "reports.sqlite3", backend="torch")
    with TestClient(app) as client:
        files = [("files", ("frontal.jpg", FRONTAL.read_bytes(), "image/jpeg"))]
        made = client.post("/api/v1/studies/1.2.3/report:upload", files=files,
                           headers={"Authorization": f"Bearer {WRITER}"})
        assert made.status_code == 200, made.text
        url = f"/api/v1/reports/{made.json()['report_id']}/heatmaps/pleural-effusion"
        got = client.get(url, headers={"Authorization": f"Bearer {READER}"})
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(got.content)) as picture:
            assert picture.size == (256, 256)
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": f"Bearer {WRITER}"}).status_code == 403
        unknown = client.get(url.replace("pleural-effusion", "broken-heart"),
                             headers={"Authorization": f"Bearer {READER}"})
        assert unknown.status_code == 404 and "unknown finding" in unknown.json()["detail"]
        assert client.get("/api/v1/reports/0000/heatmaps/fracture",
                          headers={"Authorization": f"Bearer {READER}"}).status_code == 404
    events = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert "report.read.heatmap" in events
