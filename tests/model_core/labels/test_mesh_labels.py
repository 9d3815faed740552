"""The MeSH -> CheXpert mapping (model_core.labels.mesh)."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX
from model_core.labels.mesh import MESH_TO_CHEXPERT, mesh_to_chexpert
from model_core.labels.targets import NEUTRAL, OTHER


def positives(vec: np.ndarray) -> set[str]:
    return {name for name, v in zip(CHEXPERT_LABELS, vec) if v == 1.0}


def test_mesh_normal():
    assert positives(mesh_to_chexpert("normal")) == {"No Finding"}
    assert positives(mesh_to_chexpert("")) == {"No Finding"}


@pytest.mark.parametrize("mesh,expected", [
    ("Cardiomegaly/mild", {"Cardiomegaly"}),
    ("Cardiac Shadow/enlarged/moderate", {"Cardiomegaly"}),
    ("Mediastinum/prominent", {"Enlarged Cardiomediastinum"}),
    ("Opacity/lung/base/left/mild;Pulmonary Atelectasis/base/left", {"Lung Opacity", "Atelectasis"}),
    ("Opacity/lung/upper lobe/right/round", {"Lung Opacity", "Lung Lesion"}),
    ("Thickening/pleura/apex/bilateral", {"Pleural Other"}),
    ("Cicatrix/lung/apex/pleura", {"Pleural Other"}),
    ("Cicatrix/lung/base/left", {"Lung Opacity"}),
    ("Mass/lung/right", {"Lung Lesion"}),
    ("Nodule/lung/lingula", {"Lung Lesion"}),
    ("Hydropneumothorax/right", {"Pneumothorax", "Pleural Effusion"}),
    ("Fractures, Bone/ribs/healed", {"Fracture"}),
    ("Pulmonary Congestion/mild", {"Edema"}),
])
def test_mesh_mapping(mesh, expected):
    assert positives(mesh_to_chexpert(mesh)) == expected


def test_mesh_devices_keep_no_finding():
    assert positives(mesh_to_chexpert("Catheters, Indwelling/right")) == {"No Finding", "Support Devices"}


def test_mesh_unmapped_abnormality_clears_no_finding():
    for mesh in ("Calcified Granuloma/lung/right", "Thoracic Vertebrae/degenerative", "Some New Term/left"):
        assert not mesh_to_chexpert(mesh).any(), mesh


def test_mesh_neutral_terms_and_normalization():
    assert positives(mesh_to_chexpert("Lung/hypoinflation;No Indexing")) == {"No Finding"}
    # case and whitespace of the head term do not matter
    assert positives(mesh_to_chexpert("cardiac  shadow/Enlarged")) == {"Cardiomegaly"}


def test_mesh_calcified_nodule_is_not_a_lesion():
    vec = mesh_to_chexpert("Nodule/lung/lingula;Calcinosis/lung/lingula")
    assert not vec.any()


def test_mesh_rejects_non_string():
    with pytest.raises(ValueError, match="string"):
        mesh_to_chexpert(float("nan"))  # type: ignore[arg-type]


def test_mesh_table_targets_are_valid():
    for rule in MESH_TO_CHEXPERT:
        assert rule.targets and all(t in LABEL_INDEX or t in (OTHER, NEUTRAL) for t in rule.targets)
