"""MeSH annotation -> CheXpert: the explicit table `MESH_TO_CHEXPERT` and `mesh_to_chexpert`.

The Indiana team's manual MeSH annotation of each IU X-ray study is the training label of the
embedded data; `mesh_to_chexpert` turns it into the float32 (14,) 0/1 vector of
`model_core.chexpert`. "No Finding" follows CheXpert's aggregation rule: 1 only when no term maps
to a pathology (a label other than Support Devices) or to OTHER, an abnormality outside the 14
(emphysema, granuloma, degenerative spine, hiatal hernia, ...). So "Calcified Granuloma" alone
gives No Finding = 0 and no other label; a device alone leaves No Finding = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from model_core.chexpert import LABEL_INDEX, NUM_LABELS, POSITIVE
from model_core.labels.targets import NEUTRAL, NO_FINDING, OTHER, SUPPORT_DEVICES


@dataclass(frozen=True)
class MeshRule:
    """One row of the MeSH table.

    head: the MeSH head term (compared case-insensitively, whitespace collapsed).
    targets: CheXpert labels (or OTHER / NEUTRAL) this term maps to.
    qualifiers: the rule applies only when the term carries at least one of these qualifiers
        (empty: any term with this head). Rows of one head are tried in order; the first that
        applies wins, so a qualifier rule comes before the head's fallback row.
    why: the reason, where the mapping is not obvious.
    """

    head: str
    targets: tuple[str, ...]
    qualifiers: frozenset[str] = frozenset()
    why: str = ""


def _rule(head: str, *targets: str, when: Iterable[str] = (), why: str = "") -> MeshRule:
    return MeshRule(head, tuple(targets), frozenset(q.lower() for q in when), why)


# The table. Guiding principle: map a MeSH term the way the CheXpert labeler would label the
# report phrase the annotator indexed (its mention lists), so that MeSH labels of IU X-ray and
# CheXpert-labeled data (MIMIC-CXR) mean the same thing. A head that is not listed here at all is
# treated as OTHER (a conservative default: an unknown term is an abnormality, not a label).
MESH_TO_CHEXPERT: tuple[MeshRule, ...] = (
    # --- no abnormality ---
    _rule("normal", NEUTRAL),
    _rule("No Indexing", NEUTRAL, why="annotator indexed nothing; these reports read as normal"),
    _rule("Technical Quality of Image Unsatisfactory", NEUTRAL, why="about the image, not the patient"),
    _rule("Lung", NEUTRAL, when=("hypoinflation",),
          why="low lung volumes: effort/technique; not a CheXpert observation nor in its catch-all"),
    _rule("Lung", NEUTRAL, when=("azygos lobe",), why="normal anatomic variant"),
    _rule("Lung", OTHER, why="hyperdistention (hyperinflation), hilar/interstitial prominence: catch-all"),
    _rule("Epicardial Fat", NEUTRAL, why="normal variant"),
    _rule("Nipple Shadow", NEUTRAL, why="normal variant"),
    _rule("Adipose Tissue", NEUTRAL, why="normal variant"),
    # --- heart and mediastinum ---
    _rule("Cardiomegaly", "Cardiomegaly", why="all grades incl. borderline (CheXpert: uncertain)"),
    _rule("Cardiac Shadow", "Cardiomegaly", when=("enlarged", "prominent"), why="enlarged cardiac silhouette"),
    _rule("Cardiac Shadow", OTHER, why="obscured / irregular silhouette"),
    _rule("Heart", "Cardiomegaly", when=("enlarged", "prominent")),
    _rule("Heart", OTHER, why="mostly 'obscured heart border'"),
    _rule("Heart Atria", "Cardiomegaly", why="chamber enlargement enlarges the cardiac silhouette"),
    _rule("Heart Ventricles", "Cardiomegaly", why="chamber enlargement enlarges the cardiac silhouette"),
    _rule("Mediastinum", "Enlarged Cardiomediastinum", when=("enlarged", "prominent"),
          why="widened / prominent mediastinum"),
    _rule("Mediastinum", OTHER, why="e.g. mediastinal lymph nodes: not in CheXpert's mention list"),
    _rule("Pericardial Effusion", OTHER,
          why="not one of the 14; CheXpert excludes 'pericardial effusion' from Pleural Effusion"),
    # --- lung parenchyma ---
    _rule("Opacity", "Lung Opacity", "Lung Lesion", when=("round",),
          why="'round' opacity is how the nodular opacities of the reports are indexed (25 of 27 in train)"),
    _rule("Opacity", "Lung Opacity"),
    _rule("Airspace Disease", "Lung Opacity"),
    _rule("Infiltrate", "Lung Opacity"),
    _rule("Density", "Lung Opacity", "Lung Lesion", when=("round",), why="nodular density, as round Opacity"),
    _rule("Density", "Lung Opacity", when=("lung", "lower lobe", "upper lobe", "middle lobe", "lingula", "base",
                                          "retrocardiac", "hilum", "apex", "costophrenic angle"),
          why="a density in the lung is an opacity (CheXpert: 'increased density')"),
    _rule("Density", OTHER, why="densities over ribs / mediastinum / soft tissue"),
    _rule("Cicatrix", "Pleural Other", when=("pleura",),
          why="pleural(-parenchymal) scar is CheXpert's Pleural Other, and it unmentions it from opacity"),
    _rule("Cicatrix", "Lung Opacity", why="CheXpert lists 'scar'/'parenchymal scarring' under lung opacity"),
    _rule("Markings", "Lung Opacity", when=("interstitial", "reticular"),
          why="increased interstitial / reticular markings: CheXpert opacity phrases"),
    _rule("Markings", OTHER, why="prominent bronchovascular markings: catch-all"),
    _rule("Lung Diseases, Interstitial", "Lung Opacity", why="interstitial lung disease: CheXpert opacity phrase"),
    _rule("Pulmonary Fibrosis", "Pleural Other",
          why="CheXpert's labeler lists 'fibrosis' under Pleural Other; kept for comparability"),
    _rule("Fibrosis", "Pleural Other", why="as Pulmonary Fibrosis"),
    _rule("Thickening", "Pleural Other", when=("pleura", "apex"), why="(apical) pleural thickening"),
    _rule("Thickening", "Lung Opacity", when=("bronchi", "bronchovascular", "interstitial"),
          why="peribronchial / interstitial thickening: CheXpert opacity phrases"),
    _rule("Thickening", OTHER),
    _rule("Consolidation", "Consolidation"),
    _rule("Pneumonia", "Pneumonia", why="no hierarchy: Lung Opacity only if indexed too (as CheXpert)"),
    _rule("Pulmonary Atelectasis", "Atelectasis"),
    _rule("Pulmonary Edema", "Edema"),
    _rule("Pulmonary Congestion", "Edema", why="CheXpert: 'pulmonary/vascular congestion' is an Edema mention"),
    _rule("Heart Failure", "Edema", why="CheXpert: 'heart failure'/'CHF' is an Edema mention"),
    _rule("Nodule", "Lung Lesion", why="except a calcified nodule, see CALCIFIED_NODULE_RULE"),
    _rule("Mass", "Lung Lesion"),
    _rule("Cavitation", "Lung Lesion", why="CheXpert: 'cavitary lesion'"),
    _rule("Calcified Granuloma", OTHER,
          why="CheXpert: 'granuloma' is catch-all and 'calcified nodule' is unmentioned from Lung Lesion"),
    _rule("Granuloma", OTHER, why="as Calcified Granuloma"),
    _rule("Granulomatous Disease", OTHER, why="healed granulomatous disease: catch-all"),
    _rule("Calcinosis", OTHER, why="calcification (nodes, aorta, lung): CheXpert catch-all 'calcifi'"),
    # --- pleura ---
    _rule("Pleural Effusion", "Pleural Effusion"),
    _rule("Hydropneumothorax", "Pneumothorax", "Pleural Effusion"),
    _rule("Hemopneumothorax", "Pneumothorax", "Pleural Effusion"),
    _rule("Hemothorax", "Pleural Effusion", why="blood is pleural fluid on a radiograph"),
    _rule("Pneumothorax", "Pneumothorax"),
    _rule("Costophrenic Angle", OTHER,
          why="blunting: effusion or pleural scarring; MeSH indexes an effusion separately when reported"),
    _rule("Sulcus", OTHER, why="as Costophrenic Angle"),
    _rule("Pleura", OTHER, why="as Costophrenic Angle"),
    # --- bones ---
    _rule("Fractures, Bone", "Fracture", why="healed and old fractures too (as CheXpert)"),
    # --- devices ---
    _rule("Catheters, Indwelling", SUPPORT_DEVICES),
    _rule("Tube, Inserted", SUPPORT_DEVICES),
    _rule("Implanted Medical Device", SUPPORT_DEVICES, why="pacemaker, valve, port, humeral prosthesis"),
    _rule("Medical Device", SUPPORT_DEVICES),
    _rule("Stents", SUPPORT_DEVICES),
    _rule("Spinal Fusion", SUPPORT_DEVICES, why="fusion hardware: CheXpert 'hardware'/'plate'/'screw'"),
    _rule("Surgical Instruments", SUPPORT_DEVICES,
          why="surgical clips / sternotomy wires; MIMIC-style CheXpert labels count them as devices"),
    _rule("Sutures", SUPPORT_DEVICES, why="surgical suture / staple lines"),
    # --- deliberately unmapped abnormalities (catch-all; CheXpert's "no finding" phrases) ---
    _rule("Emphysema", OTHER), _rule("Pulmonary Emphysema", OTHER), _rule("Bullous Emphysema", OTHER),
    _rule("Subcutaneous Emphysema", OTHER), _rule("Pulmonary Disease, Chronic Obstructive", OTHER),
    _rule("Lung, Hyperlucent", OTHER), _rule("Blister", OTHER, why="bulla"),
    _rule("Thoracic Vertebrae", OTHER, why="degenerative spine"), _rule("Spine", OTHER),
    _rule("Osteophyte", OTHER), _rule("Spondylosis", OTHER), _rule("Scoliosis", OTHER), _rule("Kyphosis", OTHER),
    _rule("Deformity", OTHER, why="rib/vertebral deformity; a fracture is indexed as Fractures, Bone"),
    _rule("Aorta", OTHER, why="tortuous / calcified aorta"), _rule("Aorta, Thoracic", OTHER),
    _rule("Atherosclerosis", OTHER), _rule("Diaphragm", OTHER, why="elevated or flattened"),
    _rule("Diaphragmatic Eventration", OTHER), _rule("Hernia, Hiatal", OTHER),
    _rule("Foreign Bodies", OTHER, why="bullet fragments, piercings: CheXpert catch-all 'bullet'"),
    _rule("Volume Loss", OTHER, why="CheXpert catch-all 'volume loss', not Atelectasis"),
    _rule("Lucency", OTHER), _rule("Cysts", OTHER), _rule("Bronchiectasis", OTHER),
    _rule("Pulmonary Artery", OTHER), _rule("Hypertension, Pulmonary", OTHER),
    _rule("Lymph Nodes", OTHER), _rule("Shift", OTHER, why="mediastinal shift"),
    _rule("Breast Implants", OTHER), _rule("Mastectomy", OTHER), _rule("Pneumonectomy", OTHER),
    _rule("Pneumoperitoneum", OTHER),
)

# A compound rule: the annotators index "calcified nodule" as a Nodule term plus a Calcinosis term
# with the same qualifiers ("Nodule/lung/lingula;Calcinosis/lung/lingula"). CheXpert's labeler
# explicitly excludes "calcified nodule" from Lung Lesion (a healed granuloma), so such a Nodule
# term is treated as OTHER.
CALCIFIED_NODULE_RULE = ("nodule", "calcinosis")


def _rules_by_head(rules: Iterable[MeshRule]) -> dict[str, list[MeshRule]]:
    by_head: dict[str, list[MeshRule]] = {}
    for rule in rules:
        if not all(t in LABEL_INDEX or t in (OTHER, NEUTRAL) for t in rule.targets):
            raise ValueError(f"MeSH rule for {rule.head!r}: a target is not a CheXpert label, OTHER or NEUTRAL")
        by_head.setdefault(" ".join(rule.head.lower().split()), []).append(rule)
    return by_head


_MESH_RULES_BY_HEAD = _rules_by_head(MESH_TO_CHEXPERT)


def parse_mesh(mesh: str) -> list[tuple[str, frozenset[str]]]:
    """Split a MeSH field into (head, qualifiers) pairs, lower-cased, whitespace collapsed.

    "Opacity/lung/base/left/mild;normal" -> [("opacity", {"lung", "base", "left", "mild"}), ("normal", {})]
    """
    terms = []
    for term in mesh.split(";"):
        parts = [" ".join(p.lower().split()) for p in term.split("/")]
        if parts[0]:
            terms.append((parts[0], frozenset(p for p in parts[1:] if p)))
    return terms


def mesh_term_targets(head: str, qualifiers: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Targets (CheXpert labels, OTHER or NEUTRAL) of one parsed MeSH term; unknown heads are OTHER."""
    for rule in _MESH_RULES_BY_HEAD.get(head, ()):
        if not rule.qualifiers or rule.qualifiers & qualifiers:
            return rule.targets
    return (OTHER,)


def mesh_to_chexpert(mesh: str) -> np.ndarray:
    """MeSH annotation string -> float32 (14,) 0/1 vector in CheXpert order.

    No Finding = 1 when no pathology (any label but Support Devices) and no OTHER abnormality is
    indexed. An empty string (nothing indexed) therefore gives No Finding = 1.
    Raises ValueError if `mesh` is not a string (e.g. a NaN from pandas: fill it with "").
    """
    if not isinstance(mesh, str):
        raise ValueError(f"mesh must be a string, got {type(mesh).__name__}")
    out = np.zeros(NUM_LABELS, dtype=np.float32)
    abnormal = False
    terms = parse_mesh(mesh)
    nodule, calcinosis = CALCIFIED_NODULE_RULE
    calcified_sites = {qualifiers for head, qualifiers in terms if head == calcinosis}
    for head, qualifiers in terms:
        calcified_nodule = head == nodule and qualifiers in calcified_sites
        for target in (OTHER,) if calcified_nodule else mesh_term_targets(head, qualifiers):
            if target == OTHER:
                abnormal = True
            elif target != NEUTRAL:
                out[LABEL_INDEX[target]] = POSITIVE
                abnormal |= target != SUPPORT_DEVICES
    out[LABEL_INDEX[NO_FINDING]] = 0.0 if abnormal else POSITIVE
    return out
