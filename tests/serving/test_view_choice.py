"""serving.studies.choose: the served model gets the view slots it was trained on (view_slots' rule)."""

import pytest

from serving.errors import BadInput
from serving.studies import choose


@pytest.mark.parametrize(("views", "slots", "expected"), [
    (["Lateral", "PA"], 1, [1]),
    ([None, "Lateral"], 1, [0]),                      # unknown counts as frontal
    (["Lateral", "PA", "AP"], 2, [1, 0]),             # first frontal, first lateral
    (["PA", "AP"], 2, [0, None]),                     # no lateral: its slot is marked missing
    (["LL", "Lateral"], 2, [None, 0]),                # lateral only: a two-view model was trained on such studies
])
def test_slots(views, slots, expected):
    assert choose(views, slots) == expected


def test_a_one_view_model_refuses_a_lateral_only_study_without_echoing_views():
    with pytest.raises(BadInput, match="no frontal view") as err:
        choose(["Lateral", "LL"], 1)
    assert "LL" not in str(err.value)


def test_other_slot_counts_are_a_programming_error():
    with pytest.raises(ValueError, match="1 or 2"):
        choose(["PA"], 3)


def test_a_two_view_model_is_served_both_views_and_lateral_only_studies(tmp_path, tiny_tokenizer):
    """End to end through the upload route with a two-view tiny model (the demo's shape): frontal + lateral, and a
    lateral-only study (refused by a one-view model) both get drafts; the validated pool keeps the images as given."""
    import json

    import numpy as np
    import torch
    from fastapi.testclient import TestClient
    from test_api import TOKENS, R, W, make_app, png_bytes
    from tiny_models import tiny_dinov2_config

    from model_core.data.validated import ValidatedPool
    from model_core.modeling.model import RadiologyMultimodalModel
    from serving.backends import load_model

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    RadiologyMultimodalModel(tiny_dinov2_config(), tiny_tokenizer).eval().save_pretrained(model_dir)
    (model_dir / "config.json").write_text(json.dumps({"generation": {"num_beams": 2, "max_new_tokens": 6}}))
    (model_dir / "detection.json").write_text(json.dumps({"temperature": 1.0, "thresholds": {}}))
    (model_dir / "model_card.json").write_text(json.dumps({"version": "two-view", "name": "tiny"}))
    loaded = load_model(model_dir, backend="torch", allow_ungated_model=True)
    assert loaded.max_views == 2
    app = make_app(tmp_path, model=loaded, tokens=TOKENS, prediction_log=str(tmp_path / "log.sqlite3"),
                   validated_pool=str(tmp_path / "pool"))
    with TestClient(app) as client:
        both = client.post("/api/v1/studies/1.2.3/report:upload", headers=W,
                           files=[("files", ("f.png", png_bytes(), "image/png")),
                                  ("files", ("l.png", png_bytes((48, 64)), "image/png"))],
                           data={"request": json.dumps({"views": ["pa", "LATERAL"]})})
        lateral = client.post("/api/v1/studies/1.2.4/report:upload", headers=W,
                              files=[("files", ("l.png", png_bytes((48, 64)), "image/png"))],
                              data={"request": json.dumps({"views": ["LL"]})})
        assert both.status_code == 200 and lateral.status_code == 200, (both.text, lateral.text)
        assert app.state.service.writer.flush()
        heat = client.get(f"/api/v1/reports/{lateral.json()['report_id']}/heatmaps/cardiomegaly", headers=R)
        assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"   # the present view only
    pending = sorted(p.name for p in (tmp_path / "pool" / "pending").glob("*.npy"))
    kept = {p.name.split(".")[0] for p in (tmp_path / "pool" / "pending").glob("*.npy")}
    assert len(kept) == 2 and len(pending) == 3            # two images of one study, one of the other
    views = [json.loads(p.read_text()) for p in (tmp_path / "pool" / "pending").glob("*.views.json")]
    assert sorted(map(tuple, views)) == [("Frontal", "Lateral"), ("Lateral",)]
    assert all(np.load(p).ndim == 2 for p in (tmp_path / "pool" / "pending").glob("*.npy"))
    assert ValidatedPool(tmp_path / "pool").root.is_dir()

