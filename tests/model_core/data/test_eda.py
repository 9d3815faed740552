"""EDA figures and summary on a 20-study slice of the embedded IU X-ray data (and a MIMIC-style dict)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NUM_LABELS
from model_core.data import eda
from model_core.data.iu_xray import load_iu_xray
from model_core.data.manifest import EMBEDDED_ROOT
from model_core.labels.labeler import label_report

N_STUDIES = 20
PNG_NAMES = ("label_frequency", "report_length", "sample_grid", "cooccurrence")


@pytest.fixture(scope="module")
def eda_run(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    out_dir = tmp_path_factory.mktemp("eda")
    return eda.run_eda(out_dir, split="train", limit_studies=N_STUDIES, seed=3), out_dir


@pytest.fixture(scope="module")
def summary(eda_run) -> dict:
    paths, _ = eda_run
    return json.loads(paths["summary"].read_text())


def test_writes_four_valid_pngs_and_a_summary(eda_run):
    paths, out_dir = eda_run
    assert set(paths) == {*PNG_NAMES, "summary"}
    for name in PNG_NAMES:
        path = paths[name]
        assert path.parent == out_dir and path.suffix == ".png"
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG"
            width, height = im.size
        assert 800 <= width <= 3000 and 600 <= height <= 3000, (name, im.size)
        assert path.stat().st_size > 20_000, name        # a drawn figure, not an empty canvas
    # Atomic writes leave no temp files behind.
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(eda.FILES.values())


def test_summary_matches_the_labels(summary):
    ds = load_iu_xray(EMBEDDED_ROOT, split="train", views=("Frontal", "Lateral"), limit_studies=N_STUDIES)
    first = {}
    for i, meta in enumerate(ds["metadata"]):
        first.setdefault(meta["study_id"], i)
    rows = list(first.values())
    labels = ds["labels"][rows]                                      # (20, 14) MeSH-derived 0/1
    texts = [f"{ds['metadata'][i]['findings']} {ds['metadata'][i]['impression']}".strip() for i in rows]
    uncertain = np.stack([np.asarray(label_report(text), dtype=np.float32) for text in texts]) == -1

    assert summary["n_studies"] == N_STUDIES == len(rows)
    assert summary["n_images"] == len(ds["images"])
    assert summary["n_frontal_images"] == sum(m["view"] == "Frontal" for m in ds["metadata"])
    positives = labels.eq(1).sum(dim=0)
    for k, name in enumerate(CHEXPERT_LABELS):
        entry = summary["labels"][name]
        assert entry["positive"] == int(positives[k]), name
        assert entry["uncertain"] == int(uncertain[:, k].sum()), name
        assert entry["prevalence"] == pytest.approx(int(positives[k]) / N_STUDIES, abs=1e-5)
        assert entry["rare"] == (int(positives[k]) / N_STUDIES < eda.RARE_PREVALENCE)
    top = summary["most_common_label"]
    assert summary["labels"][top]["positive"] == int(positives.max())
    assert summary["labels"][top]["imbalance_ratio"] == 1.0

    cooc = np.array(summary["cooccurrence"]["counts"])
    assert summary["cooccurrence"]["labels"] == list(CHEXPERT_LABELS)
    assert cooc.shape == (NUM_LABELS, NUM_LABELS) and (cooc == cooc.T).all()
    assert np.diag(cooc).tolist() == positives.tolist()
    binary = labels.eq(1).to(torch.int64)
    assert cooc.tolist() == (binary.T @ binary).tolist()

    words = [eda.report_words(ds["metadata"][i]["findings"], ds["metadata"][i]["impression"]) for i in rows]
    assert summary["report_words"]["n"] == N_STUDIES
    assert summary["report_words"]["mean"] == pytest.approx(np.mean(words), abs=0.01)
    assert summary["report_words"]["median"] == pytest.approx(np.median(words))
    assert len(summary["sample_grid_study_ids"]) == 9
    assert set(summary["sample_grid_study_ids"]) <= set(first)


def test_sample_grid_choice_is_seeded(summary):
    ds = load_iu_xray(EMBEDDED_ROOT, split="train", views=("Frontal", "Lateral"), limit_studies=N_STUDIES)
    studies = eda.study_table(ds)
    _, ids_again = eda.plot_sample_grid(studies, seed=3)
    _, ids_other = eda.plot_sample_grid(studies, seed=4)
    assert ids_again == summary["sample_grid_study_ids"]
    assert ids_other != ids_again


def test_dataset_with_uncertain_labels_uses_them(tmp_path: Path):
    """A MIMIC-style dict (-1 = uncertain in the labels): no labeler run, fewer than 9 frontal images."""
    jpegs = sorted((EMBEDDED_ROOT / "images").glob("*.jpg"))[:4]
    labels = torch.zeros(4, NUM_LABELS)
    labels[:2, LABEL_INDEX["Edema"]] = -1.0                       # study 1 (two images)
    labels[2, LABEL_INDEX["Edema"]] = 1.0                         # study 2
    labels[2, LABEL_INDEX["Cardiomegaly"]] = 1.0
    labels[3, LABEL_INDEX["No Finding"]] = 1.0                    # study 3
    views = ["PA", "LATERAL", "AP", "PA"]
    study_ids = [1, 1, 2, 3]
    dataset = {
        "images": [str(p) for p in jpegs],
        "reports": ["FINDINGS: Possible mild edema. IMPRESSION: ___ edema."] * 2
        + ["IMPRESSION: Cardiomegaly and edema."] + ["IMPRESSION: Normal."],
        "labels": labels,
        "metadata": [{"study_id": s, "view": v, "findings": "", "impression": "x y z"}
                     for s, v in zip(study_ids, views)],
    }
    paths = eda.run_eda(tmp_path / "out", dataset=dataset)
    summary = json.loads(paths["summary"].read_text())
    assert summary["n_studies"] == 3 and summary["n_frontal_images"] == 3
    assert summary["uncertain_source"].startswith("dataset labels")
    assert summary["labels"]["Edema"]["uncertain"] == 1 and summary["labels"]["Edema"]["positive"] == 1
    cooc = summary["cooccurrence"]["counts"]
    assert cooc[LABEL_INDEX["Edema"]][LABEL_INDEX["Cardiomegaly"]] == 1
    assert summary["labels"]["Pneumothorax"]["imbalance_ratio"] is None
    assert sorted(summary["sample_grid_study_ids"]) == [1, 2, 3]
    assert all(paths[name].is_file() for name in PNG_NAMES)


def test_failed_figure_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(eda, "plot_cooccurrence", broken)
    with pytest.raises(RuntimeError, match="renderer failed"):
        eda.run_eda(tmp_path, split="train", limit_studies=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["label_frequency.png", "report_length.png", "sample_grid.png"]   # no temp, no summary


@pytest.mark.parametrize("report, expected", [
    ("FINDINGS: The heart is normal. Lungs are clear. IMPRESSION: Normal.", "The heart is normal."),
    ("IMPRESSION: No acute cardiopulmonary XXXX. Stable.", "No acute cardiopulmonary."),
    ("FINDINGS: There are no XXXX of a pleural effusion. IMPRESSION: x", "There are no of a pleural effusion."),
    ("", "(empty report)"),
])
def test_first_sentence(report: str, expected: str):
    assert eda.first_sentence(report) == expected


def test_first_sentence_is_truncated():
    long = "FINDINGS: " + " ".join(["opacity"] * 40) + ". Second sentence."
    title = eda.first_sentence(long)
    assert len(title) <= eda.TITLE_MAX_CHARS and title.endswith("…")


def test_report_words_ignores_deidentification_tokens():
    assert eda.report_words("Normal chest x-XXXX. XXXX XXXX stable.", "___ no change.") == 6   # "x-" counts
