"""The comparison with the current champion's packet: metric deltas and which data, model and software hashes
changed; "no champion" without one; a champion packet of the older schema lacks items, said "not recorded"."""

from __future__ import annotations

import json

import pytest
from packet_inputs import MODEL_FILES, make_inputs, pdf_strings, read_zip

from regulatory import build_packet, packet_document


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> dict:
    path = build_packet(make_inputs(True, run_id="run-champion"), tmp_path_factory.mktemp("champion"))
    return json.loads(read_zip(path)["packet.json"])


def test_no_champion_says_so():
    diff = packet_document(make_inputs(True))["champion"]
    assert diff["champion"] is None and diff["statement"].startswith("No champion")


def test_deltas_and_changed_hashes(champion, tmp_path):
    metrics = make_inputs().metrics
    metrics["summary"]["BLEU-4"]["value"] = 0.132             # champion 0.112
    metrics["summary"]["hallucination rate"]["value"] = 0.031  # champion 0.021: worse (lower is better)
    files = dict(MODEL_FILES, **{"model.pt": "7" * 64})
    data = dict(make_inputs().data_summary, manifest_sha256="2" * 64)
    path = build_packet(make_inputs(True, metrics=metrics, model_files=files, data_summary=data,
                                    champion=champion), tmp_path)
    doc = json.loads(read_zip(path)["packet.json"])
    diff = doc["champion"]
    assert diff["champion"]["run_id"] == "run-champion"
    rows = {m["metric"]: m for m in diff["metrics"]}
    assert rows["BLEU-4"]["delta"] == pytest.approx(0.02) and rows["BLEU-4"]["better"] is True
    assert rows["hallucination rate"]["delta"] == pytest.approx(0.01) and rows["hallucination rate"]["better"] is False
    assert rows["Pneumothorax sensitivity"]["delta"] == 0 and rows["Pneumothorax sensitivity"]["better"] is None
    assert {r["item"]: r["changed"] for r in diff["data"]} == {"Manifest": True, "Image digest": False,
                                                               "Split assignment": False}
    assert {r["item"]: r["changed"] for r in diff["model"]} == {"model.pt": True, "model_config.json": False,
                                                                "detection.json": False, "config.json": None}
    pdf = pdf_strings(read_zip(path)["packet.pdf"])
    assert "+0.020" in pdf and "changed" in pdf and "Changes since the current champion" in pdf


def test_an_older_champion_packet_lacks_items_not_recorded(champion):
    old = json.loads(json.dumps(champion))
    old["schema"] = "rrg.510k-packet/1"
    for key in ("model_files", "pccp"):
        del old[key]
    diff = packet_document(make_inputs(True, champion=old))["champion"]
    assert all(r["changed"] is None and r["champion"] is None for r in diff["model"])
