"""Bias audit against hand-computed values: subgroup sensitivity, flags, parity and equalized-odds gaps."""

import json

import numpy as np
import pytest
from tiny_models import SMOKE

from model_core.artifacts import PREDICTIONS
from model_core.chexpert import CRITICAL_FINDINGS, LABEL_INDEX
from model_core.config import load_config
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.evaluation.bias_audit import (
    BIAS_AUDIT,
    BIAS_PLOT,
    NOT_STATED,
    TOO_FEW,
    bias_audit,
    plot_subgroup_sensitivity,
    run_bias_audit,
    study_attributes,
)
from model_core.modeling.model_dir import save_model_dir

PTX = LABEL_INDEX["Pneumothorax"]


def group(sex: str, tp: int, fn: int, fp: int, tn: int) -> list[tuple[dict, int, float]]:
    """Studies of one sex: (attributes, pneumothorax truth, probability) with the given confusion counts."""
    attrs = study_attributes({"sex": None if sex == NOT_STATED else sex, "age": None, "mesh": "normal"},
                             {"Frontal", "Lateral"})
    return ([(attrs, 1, 0.9)] * tp + [(attrs, 1, 0.1)] * fn + [(attrs, 0, 0.9)] * fp + [(attrs, 0, 0.1)] * tn)


@pytest.fixture(scope="module")
def audit():
    rows = group("F", tp=11, fn=1, fp=7, tn=21) + group("M", tp=10, fn=0, fp=3, tn=27) + \
        group(NOT_STATED, tp=5, fn=5, fp=0, tn=10)
    truth = np.zeros((len(rows), 14))
    probs = np.full((len(rows), 14), 0.1)
    truth[:, PTX] = [r[1] for r in rows]
    probs[:, PTX] = [r[2] for r in rows]
    return bias_audit([r[0] for r in rows], truth, probs, {f: 0.5 for f in CRITICAL_FINDINGS}, n_boot=300)


def test_subgroup_sensitivity_and_flags(audit):
    sex = audit["attributes"]["sex"]
    assert sex["counts"] == {"F": 40, "M": 40, NOT_STATED: 20}
    female = sex["groups"]["F"]["findings"]["Pneumothorax"]
    assert female["sensitivity"] == pytest.approx(11 / 12) and female["specificity"] == pytest.approx(21 / 28)
    assert female["flag_rate"] == pytest.approx(18 / 40) and female["below_threshold"] is True
    assert sex["groups"]["M"]["findings"]["Pneumothorax"]["below_threshold"] is False
    assert sex["groups"]["M"]["findings"]["Fracture"]["sensitivity"] == TOO_FEW   # no positives
    assert sex["groups"][NOT_STATED]["findings"]["Pneumothorax"] == {"positives": 10, "negatives": 10,
                                                                    "estimate": TOO_FEW}   # 20 < 30 studies
    flagged = {(f["attribute"], f["group"], f["finding"]) for f in audit["flagged"]}
    assert ("sex", "F", "Pneumothorax") in flagged and ("sex", "M", "Pneumothorax") not in flagged


def test_fairness_gaps_by_hand(audit):
    ptx = audit["attributes"]["sex"]["fairness"]["Pneumothorax"]
    assert ptx["groups_compared_parity"] == ["F", "M"]   # "not stated" is never compared
    # flag rates 18/40 and 13/40; TPR 11/12 vs 10/10, FPR 7/28 vs 3/30 → max(1/12, 0.15)
    assert ptx["demographic_parity_difference"]["value"] == pytest.approx(18 / 40 - 13 / 40)
    assert ptx["equalized_odds_difference"]["value"] == pytest.approx(max(1 - 11 / 12, 7 / 28 - 3 / 30))
    low, high = ptx["equalized_odds_difference"]["ci_low"], ptx["equalized_odds_difference"]["ci_high"]
    assert low <= ptx["equalized_odds_difference"]["value"] <= high
    effusion = audit["attributes"]["sex"]["fairness"]["Pleural Effusion"]
    assert effusion["equalized_odds_difference"] == TOO_FEW   # no group has 10 positives
    views = audit["attributes"]["views"]
    assert views["counts"] == {"frontal + lateral": 100}
    assert views["fairness"]["Pneumothorax"]["demographic_parity_difference"] == TOO_FEW   # one group only
    assert audit["age"].startswith("age stated for 0 of 100") and "no age band" in audit["age"]


def test_the_figure_is_written(audit, tmp_path):
    plot_subgroup_sensitivity(audit, tmp_path / "bias.png")   # estimates with CIs beside "too few to estimate"
    assert (tmp_path / "bias.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_attributes_from_metadata_and_mesh():
    attrs = study_attributes({"sex": "F", "age": 71, "mesh": "Catheters, Indwelling;Sutures/chest;Scoliosis"},
                             {"Lateral"})
    assert attrs == {"sex": "F", "age band": "≥65", "views": "lateral only", "implants / devices": "yes",
                     "post-surgical changes": "yes", "skeletal deformity": "yes",
                     "image quality unsatisfactory": "no"}
    assert study_attributes({"sex": None, "age": 39, "mesh": ""}, {"PA"})["age band"] == "<40"


def test_mismatched_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="one attribute dict, label vector and probability vector per study"):
        bias_audit([{"sex": "F"}], np.zeros((2, 14)), np.zeros((2, 14)), {})


def test_the_pipeline_step(tiny_model, tmp_path):
    cfg = load_config(SMOKE, ["data.limit_studies=6", "eval.n_bootstrap=20"])
    model_dir = save_model_dir(tiny_model, tmp_path / "model", card={"name": "tiny", "version": "0", "created": "now"},
                               run_config=cfg.to_dict(), detection={"temperature": 1.0, "thresholds": {}})
    studies = group_studies(load_iu_xray(split="test", views=("Frontal", "Lateral"), image_size=32,
                                         limit_studies=6))
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / PREDICTIONS).write_text("".join(json.dumps(
        {"study_id": s["study_id"], "generated": "", "reference": "", "mesh_labels": s["labels"].tolist(),
         "detection_probabilities": [0.6] * 14}) + "\n" for s in studies))
    audit = run_bias_audit(cfg, model_dir, evaluation, tmp_path / "bias")
    assert audit["studies"] == len(studies) and set(audit["attributes"]) >= {"sex", "age band", "views"}
    assert all(row["estimate"] == TOO_FEW for g in audit["attributes"]["sex"]["groups"].values()
               for row in g["findings"].values())   # 6 studies: nothing is estimable
    written = json.loads((tmp_path / "bias" / BIAS_AUDIT).read_text())
    assert written["studies"] == len(studies) and "study_id" not in json.dumps(written)
    assert (tmp_path / "bias" / BIAS_PLOT).stat().st_size > 5000
