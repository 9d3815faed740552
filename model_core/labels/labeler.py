"""CheXpert labels for IU X-ray: from the human MeSH annotation, and from report text.

Two label sources, both in the encoding of `model_core.chexpert` (float32 (14,), CheXpert order):

* `mesh_to_chexpert(mesh)`: the Indiana team's manual MeSH annotation (0/1), through the explicit
  table `MESH_TO_CHEXPERT`. This is the training label of the embedded data.
* `label_report(text)` / `label_reports(texts)`: a CheXpert-style rule labeler of free report text
  (1 positive, -1 uncertain, 0 negative or unmentioned). It labels generated reports for the
  clinical-efficacy metrics and the QA check (`text_mentions`), and is measured against the MeSH
  labels by `labeler_agreement` (see docs/labeler_agreement.md).

"No Finding" follows CheXpert's aggregation rule on both sides: it is 1 only when no observation
other than Support Devices is positive or uncertain, where, as in the CheXpert labeler, the
observations include a catch-all of "other abnormalities" that are not among the 14 (emphysema,
granuloma, degenerative spine, hiatal hernia, ...). So "calcified granuloma" alone gives
No Finding = 0 and no other label; "Support Devices" alone leaves No Finding = 1.

Why a rule engine and not medspacy (ConText): medspacy 1.3.1 was tried in a scratch venv. It
installs without network model downloads and with numpy 1.26, but it (a) pulls about 45 extra
packages (spaCy 3.7, thinc, Cython, nltk, QuickUMLS, unqlite, pydantic, ...), (b) its PyRuSH
sentencizer logs every sentence's tokens at DEBUG through loguru's default stderr handler, i.e.
report text reaches the logs unless loguru is reconfigured process-wide, (c) took 23.5 s for the
3,444 IU reports on this 2-core machine with only six target rules, close to the 30 s budget, and
(d) its default ConText rules disagree with CheXpert's conventions anyway ("cannot exclude
pneumonia" came back negated, CheXpert calls it uncertain), so they would have to be rewritten.
The engine below is NegEx/ConText-style: per-observation mention phrases (modelled on the
CheXpert labeler's phrase lists), pre- and post-mention negation and uncertainty triggers, and a
scope that ends at the sentence and at clause boundaries ("but", "however", ";", ...). It labels
the 3,444 IU reports in about 2.3 s on one core (about 0.65 ms a report), with no dependency
beyond numpy and pandas. Agreement with the MeSH labels: docs/labeler_agreement.md.

Report text is never logged (medical data); logs carry counts only.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NEGATIVE, NUM_LABELS, POSITIVE, UNCERTAIN

log = logging.getLogger(__name__)

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
# Labels whose positive (or uncertain) mention rules out "No Finding" (CheXpert: all but Support Devices).
PATHOLOGY_LABELS: tuple[str, ...] = tuple(x for x in CHEXPERT_LABELS if x not in (NO_FINDING, SUPPORT_DEVICES))

# Targets in the tables below that are not one of the 14 labels.
OTHER = "other abnormality"  # an abnormality outside the 14: maps to no label, but rules out No Finding
NEUTRAL = "neutral"          # not an abnormality of the patient (or no information): maps to nothing


# ---------------------------------------------------------------------------------------------
# 1. MeSH annotation -> CheXpert
# ---------------------------------------------------------------------------------------------

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

_MESH_RULES_BY_HEAD: dict[str, list[MeshRule]] = {}
for _r in MESH_TO_CHEXPERT:
    _MESH_RULES_BY_HEAD.setdefault(" ".join(_r.head.lower().split()), []).append(_r)
    assert all(t in LABEL_INDEX or t in (OTHER, NEUTRAL) for t in _r.targets), _r


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
        raise ValueError(f"mesh must be a string, got {type(mesh).__name__}: {mesh!r}")
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


# ---------------------------------------------------------------------------------------------
# 2. Report text -> CheXpert (rule labeler)
# ---------------------------------------------------------------------------------------------
# Phrases are regular expressions over lower-cased text, matched at word starts. Each
# observation has mention phrases; UNCERTAIN_MENTIONS are mentions that are hedged by themselves
# (CheXpert: "pulmonary congestion" is uncertain edema); EXCLUDED_MENTIONS are spans that look
# like a mention but are not one (CheXpert's "unmention" lists).

_HEART = r"(?:heart|cardiac(?: silhouette| shadow| size| contours?)?|cardiomediastinal silhouette)"
_ENLARGED = r"(?:enlarge\w*|large|prominent|increased)"
_MEDIASTINUM = r"(?:mediastin\w*|superior mediastin\w*)"
# up to 5 words between a structure and its modifier ("heart size is mildly enlarged")
_GAP = r"(?:\W+(?!normal\b|within\b)\w+){0,5}?\W+"

MENTION_PHRASES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        rf"{_MEDIASTINUM}(?: (?:contours?|silhouette|width))?{_GAP}(?:widen\w*|enlarge\w*|prominen\w*)",
        rf"(?:widen\w*|enlarge\w*|prominen\w*|wide) (?:superior |upper )?{_MEDIASTINUM}",
        r"(?:widening|enlargement|prominence) of the (?:superior |upper )?(?:mediastin\w*|paratracheal)",
        r"paratracheal (?:\w+ )?(?:prominence|widening|fullness|enlargement)",
        # "enlarged cardiomediastinal silhouette" is left to Cardiomegaly: the annotators index it as
        # an enlarged cardiac shadow (train: all 7 cases), not as a mediastinal finding.
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        rf"{_HEART}{_GAP}{_ENLARGED}",
        rf"{_ENLARGED} (?:\w+ )?(?:heart|cardiac silhouette|cardiac shadow|cardiac size)",
        r"(?:cardiac|heart) enlargement",
        r"enlargement of the (?:heart|cardiac silhouette)",
        r"(?:left|right) (?:ventric\w*|atri\w*) enlargement",
    ),
    "Lung Opacity": (
        r"opaci\w*", r"opaque",
        r"infiltrat\w*",
        r"(?:airspace|air space|air-space|alveolar) (?:disease|process|filling)",
        r"densit(?:y|ies)",
        r"haz(?:y|iness)",
        r"interstitial (?:markings?|opacit\w*|pattern|prominence|changes?|disease|lung disease|thickening|process)",
        r"(?:increased|prominent|coarse\w*) interstitial",
        r"reticul\w*",
        r"scar\w*",
        r"ground[- ]glass",
        r"peribronchial (?:thickening|cuffing)",
        r"bronchial (?:wall )?thickening",
    ),
    "Lung Lesion": (
        r"mass(?:es)?\b",
        r"nodul\w*",
        r"lump",
        r"cavit\w*",
        r"carcinoma", r"neoplas\w*", r"tumou?r", r"malignan\w*",
    ),
    "Edema": (
        r"edema",
        r"(?:congestive )?heart failure",
        r"chf",
        r"congestion",
        r"congestive (?:changes|failure)",
        r"(?:pulmonary )?venous hypertension",
        r"(?:vascular |venous )?engorge\w*",
        r"(?:prominen\w*|increased|enlarged) (?:of )?(?:the )?(?:central )?(?:pulmonary |lung )?(?:vascularity|vasculature)",
        r"vascular (?:prominence|redistribution|indistinctness)",
        r"indistinct(?:ness)?(?: of)?(?: the)? (?:pulmonary )?vascula\w*",
        r"kerley",
    ),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (r"pneumonia", r"bronchopneumonia", r"pneumonitis", r"infection", r"infectious",),
    "Atelectasis": (r"atelecta\w*", r"collapse\w*",),
    "Pneumothorax": (r"pneumothora\w*", r"hydropneumothora\w*", r"hemopneumothora\w*", r"pleural air(?: collections?)?",
                     r"apical (?:pleural )?air collections?"),
    "Pleural Effusion": (
        r"effusions?",
        r"pleural fluid",
        r"(?:hydro|hemo)pneumothora\w*",
        r"hemothorax",
        r"fluid (?:in|within|along) the (?:\w+ )?(?:fissure|pleural)",
    ),
    "Pleural Other": (
        r"pleural (?:thickening|scar\w*|plaques?|calcification\w*)",
        r"pleural[- ]parenchymal (?:scar\w*|thickening|changes?)",
        r"pleuroparenchymal (?:scar\w*|thickening|changes?)",
        r"thickening of the (?:\w+ )?pleura",
        r"(?:bi)?apical (?:\w+ )?(?:pleural )?(?:cap|capping|thickening)",
        r"fissur\w* thickening", r"thickening (?:of|in|along) the (?:\w+ )?fissures?",
        r"fibrothorax",
        r"fibros\w*",
        r"fibrotic",
    ),
    "Fracture": (r"fracture\w*", r"fx", r"broken"),
    "Support Devices": (
        r"pacemaker\w*", r"pacer\w*", r"(?:pacing|pacer|cardiac|icd|transvenous) (?:leads?|wires?)",
        r"(?:aicd|icd|defibrillator\w*)",
        r"(?:central|venous|picc|arterial|port|swan[- ]ganz|jugular|subclavian|ij)\w* (?:venous )?(?:line|catheter)s?",
        r"picc", r"catheter\w*", r"(?:port-a-cath|portacath|mediport|port)\b",
        r"(?:endotracheal|et|nasogastric|ng|orogastric|og|feeding|chest|tracheostomy|enteric|dobhoff|gastric) tubes?",
        r"tube",
        r"(?:prosthetic|mechanical|artificial) (?:\w+ )?valves?",
        r"valve (?:replacement|prosthesis)", r"(?:avr|mvr)\b",
        r"hardware", r"(?:surgical )?(?:clips?|staples?|sutures?)\b", r"sternotomy wires?",
        r"(?:sternal|cerclage) (?:wires?|sutures?)", r"wires\b",
        r"screws?\b", r"plates?\b", r"rods?\b", r"arthroplast\w*", r"prosthes[ie]s", r"stents?\b",
        r"devices?\b", r"drains?\b", r"(?:loop )?recorder", r"coils?\b", r"filter\b", r"stimulator",
        # IU de-identification often hides the device name: "left chest XXXX with tip in the SVC",
        # "XXXX-A-XXXX" (Port-A-Cath), "cardiac XXXX generator" (pacemaker).
        r"tips? (?:\w+ ){0,6}?(?:svc|superior vena cava|(?:right )?atri\w*|cavoatrial|caval|brachiocephalic|"
        r"innominate|ventricle|stomach|carina|subclavian|jugular|projects?|projecting|terminat\w*)",
        r"xxxx-a-xxxx", r"(?:pulse |battery |cardiac (?:xxxx )?)?generators?",
        r"(?:monitor\w*|ecg|ekg|telemetry|electrocardiograph\w*|pacer|pacing|pacemaker) (?:\w+ )?leads?",
        r"leads? (?:\w+ )?(?:in|into|terminat\w*|projecting|overlying|over) (?:the )?(?:right|left)",
        r"shunt\w*", r"tubing", r"(?:internal )?fixation", r"(?:bone |suture )?anchors?", r"vertebroplast\w*",
        r"kyphoplast\w*", r"tracheostomy", r"porta?-?cath\w*", r"markers?", r"implant(?:ed|able)",
        r"(?:spine|spinal|cervical|thoracic|lumbar|anterior|posterior) (?:\w+ )?fusion",
    ),
}

UNCERTAIN_MENTIONS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        rf"{_HEART}{_GAP}borderline",
        r"borderline (?:cardiomegaly|enlarge\w*|heart size|cardiac size|prominent)",
    ),
    "Edema": (r"congestion", r"vascular (?:prominence|indistinctness)", r"(?:vascular |venous )?engorge\w*",
              r"(?:prominen\w*|increased|enlarged) (?:of )?(?:the )?(?:central )?(?:pulmonary |lung )?(?:vascularity|vasculature)",
              r"indistinct(?:ness)?(?: of)?(?: the)? (?:pulmonary )?vascula\w*"),
}

EXCLUDED_MENTIONS: dict[str, tuple[str, ...]] = {
    "Lung Opacity": (r"(?:pleural|pleuroparenchymal|pleural-parenchymal|pleural parenchymal) scar\w*",
                     r"(?:bone|bony|osseous|soft tissue) densit\w*", r"density of the (?:bones|osseous)",
                     r"opacit\w* (?:of|in|over) the (?:\w+ )?(?:soft tissues?|breasts?)",
                     r"scarring of the pleura", r"calcifi\w* densit\w*",
                     r"densit\w* (?:\w+ ){0,3}?(?:over|overlying|projecting over|projected over|in) (?:the )?(?:\w+ ){0,4}?"
                     r"(?:ribs?|heart|mediastinum|breasts?|spine|soft tissues?|clavicles?|scapula\w*)\b"),
    "Lung Lesion": (r"calcified (?:\w+ )?nodul\w*", r"nodul\w* calcification",
                    r"nodul\w* (?:is |are |that is |which is |which are )?(?:densely |partially )?calcified",
                    r"massive", r"(?:soft tissue|thyroid|breast|neck) mass\w*",
                    r"(?:thoracic|pleural|peritoneal|abdominal|chest) cavity"),
    "Pleural Effusion": (r"pericardial effusion",),
    "Atelectasis": (r"(?:vertebral|compression|vertebra\w*) (?:body )?collapse\w*",
                    r"collapse\w* (?:of )?(?:the )?(?:\w+ )?vertebra\w*"),
    "Pneumonia": (r"(?:urinary|urinary tract|uti)\w* infection",
                  r"(?:granulomatous|old|prior|remote|previous|healed|tuberculous|tb|fungal) (?:\w+ )?infection\w*"),
    "Support Devices": (r"breast (?:prosthes[ie]s|implants?)", r"no lines?", r"(?:midline|skin line|tube-shaped)", r"tubular", r"plate-?like",
                        r"(?:end|growth|vertebral) plates?", r"interstitial",
                        r"(?:nasogastric|feeding|endotracheal) tubes? (?:has|have) been removed"),
    "Pleural Other": (r"cystic fibrosis",),
}

# Abnormalities outside the 14 labels (CheXpert's "no finding" catch-all, extended with terms
# that are common in IU reports). Asserted (not negated), they rule out No Finding.
OTHER_ABNORMALITY_PHRASES: tuple[str, ...] = (
    r"emphysema\w*", r"copd", r"chronic obstructive", r"hyperinflat\w*", r"hyperexpan\w*", r"hyperaerat\w*",
    r"hyperlucen\w*", r"overinflat\w*", r"flatten\w*", r"bullae", r"bulla\b", r"bullous", r"blebs?\b",
    r"granulom\w*", r"calcifi\w*", r"calcinosis",
    r"degenerat\w*", r"spondylo\w*", r"osteophyt\w*", r"scolio\w*", r"kypho\w*", r"dextroscoliosis",
    r"osteopeni\w*", r"osteoporo\w*", r"demineraliz\w*", r"arthriti\w*", r"arthropath\w*", r"\bdish\b",
    r"hernia\w*", r"eventration", r"elevat\w* (?:of the )?(?:right |left )?(?:hemi)?diaphragm\w*",
    r"(?:hemi)?diaphragm\w*(?:\W+\w+){0,3}?\W+elevat\w*",
    r"atheroscl\w*", r"atheromatous", r"tortu\w*", r"ectatic", r"unfold\w*", r"aneurysm\w*",
    r"blunt\w*", r"thicken\w*", r"cuffing", r"volume loss", r"deformit\w*", r"hematoma", r"contusion",
    r"hemorrhage", r"aspiration", r"metasta\w*", r"pneumomediastinum", r"pneumoperitoneum", r"free air",
    r"(?:pulmonary )?(?:arterial )?hypertension", r"cephalization", r"(?:lymph)?adenopathy",
    r"(?:enlarged|prominent) (?:\w+ )?lymph nodes?", r"lymph nodes? (?:are |is )?enlarged",
    r"(?:enlarged|prominent) (?:\w+ )?pulmonary arter\w*", r"pulmonary arter\w*(?:\W+\w+){0,3}?\W+(?:enlarged|prominent)",
    r"(?:bi)?(?:hilar|hila) (?:prominence|enlargement|fullness)", r"crowd\w*", r"spurr?\w*", r"curvature",
    r"nipple rings?", r"ectasia", r"lesions?", r"lipoma\w*", r"breast (?:prosthes[ie]s|implants?)", r"prominen\w* (?:of the )?(?:hil\w*|bronchovascular|interstitial)",
    r"(?:bronchovascular|interstitial) markings?", r"bronchiectasis", r"bronchitis", r"bronchiolitis",
    r"airways? disease", r"reactive airway", r"asthma", r"bronchospasm",
    r"foreign bod\w*", r"bullets?\b", r"shrapnel", r"(?:metallic )?fragments?", r"bb\b", r"piercing",
    r"cysts?\b", r"cystic", r"lucenc\w*", r"lucent", r"sclero\w*", r"lytic", r"shift\w*", r"deviat\w*",
    r"mastectom\w*", r"pneumonectom\w*", r"lobectom\w*", r"pectus", r"excavatum", r"carinatum",
    r"pericardial effusion", r"sarcoid\w*", r"tuberculosis", r"(?:old|prior|healed) (?:tb|granulomatous)",
    r"abnormal\w*", r"obscur\w*", r"silhouett(?:ing|es) (?:of )?(?:the )?(?:\w+ )?(?:heart|hemidiaphragm|diaphragm)",
    r"emphysematous", r"chronic (?:lung|changes|interstitial)", r"breast implants?", r"implants?",
)

# Trigger phrases. The first group wins over negation ("cannot exclude" contains a negation).
UNCERTAIN_OVER_NEGATION = (
    r"(?:cannot|can ?not|can't|could not|not) (?:be )?(?:entirely |completely |totally |definitely )?"
    r"(?:exclude\w*|ruled? out)",
    r"no new", r"not (?:be )?(?:seen|visualized|evaluated|assessed) (?:well|clearly)",
    r"not (?:be )?(?:well|clearly|definitely) (?:seen|visualized|evaluated|assessed|excluded)",
    r"(?:poorly|incompletely|not well) (?:evaluated|visualized|assessed|seen)",
    r"no definite evidence to exclude", r"difficult to exclude", r"not entirely excluded",
)
NEGATION_PRE = (
    r"no", r"not", r"without", r"negative(?: for)?", r"free of", r"clear of", r"absence of", r"absent",
    r"resolution of", r"resolved", r"clearing of", r"removal of", r"interval removal", r"rather than", r"ruled out",
    r"rules out", r"nor", r"neither", r"never", r"none", r"cleared", r"no longer",
    r"instead of", r"deny", r"denies", r"exclude[sd]?", r"excluding", r"to exclude",
)
NEGATION_POST = (
    r"(?:is|are|was|were|has been|have been)?\s*(?:not|no longer) (?:\w+ )?"
    r"(?:seen|identified|present|evident|visualized|demonstrated|appreciated|noted|detected|visible|apparent|"
    r"enlarged|definitely seen|clearly seen)",
    r"(?:has|have|had)?\s*(?:since )?(?:resolved|cleared|been removed|been resolved|disappeared)",
    r"(?:is|are|was|were)?\s*(?:absent|removed|excluded)",
    r"(?:is|are|appears?|remains?)?\s*within (?:\w+ ){0,2}limits",
)
UNCERTAINTY_PRE = (
    r"possible", r"possibly", r"probable", r"probably", r"likely", r"presum\w*", r"questionabl\w*",
    r"question(?: of)?", r"questioned", r"suspect\w*", r"suspicious", r"suspicion", r"concern\w*", r"worrisome",
    r"suggest\w*", r"may", r"might", r"could", r"differential", r"versus", r"vs",
    r"consider\w*", r"favou?r\w*", r"maybe", r"perhaps", r"equivocal", r"indeterminate", r"uncertain",
    r"\?", r"and/or", r"r/o", r"rule out", r"either", r"correlat\w*",
)
UNCERTAINTY_POST = (
    r"(?:is|are|was|were)?\s*(?:possible|possibly|suspected|questionable|likely|probable|not excluded|"
    r"difficult to exclude|a consideration|considered|favou?red|in question)",
    r"(?:could|may|might|can) (?:also )?be (?:present|seen|noted|there)",
    r"(?:is|are) (?:in|within|included in) the differential", r"(?:is )?(?:another|a|also a) consideration",
    r"\?",
)
# "no change in", "not significantly changed": look like negations but do not negate the finding.
PSEUDO_NEGATION = (
    r"no (?:significant |appreciable |interval |substantial |significant interval )?(?:change|increase|worsening)",
    r"not (?:significantly |substantially )?(?:changed|increased)", r"without (?:significant |interval )?change",
    r"no (?:other|additional|further)(?= \w+ (?:of|in) )", r"not only", r"non ?(?:acute|specific)",
)
# Clause boundaries: triggers do not reach across them.
CLAUSE_BOUNDARY = (
    r";", r":", r"\bbut\b", r"\bhowever\b", r"\balthough\b", r"\bthough\b", r"\bexcept\b", r"\baside from\b",
    r"\bapart from\b", r"\bother than\b", r"\botherwise\b", r"\bwhereas\b", r"\bwhile\b", r"\byet\b",
    r"\bwith the exception of\b", r"\bwhich\b", r",?\s*\band\b(?=\s+(?:there|the)\b)", r",\s*(?=there\b)",
)

# Words that end the reach of a preceding negation (but not of uncertainty) inside a clause:
# "no cardiomegaly with small bilateral effusions" negates only the cardiomegaly.
NEGATION_TERMINATORS = (r"\bwith\b", r"\balong with\b", r"\bas well as\b")

_WS = re.compile(r"\s+")


def _alternation(phrases: Sequence[str]) -> str:
    return "|".join(f"(?:{p})" for p in phrases)


def _compile_mentions(table: dict[str, tuple[str, ...]]) -> dict[str, re.Pattern]:
    return {label: re.compile(rf"(?<![\w-])(?:{_alternation(ps)})(?!\w)") for label, ps in table.items()}


_MENTION_RE = _compile_mentions(MENTION_PHRASES)
_UNCERTAIN_MENTION_RE = _compile_mentions(UNCERTAIN_MENTIONS)
_EXCLUDED_RE = _compile_mentions(EXCLUDED_MENTIONS)
_OTHER_RE = re.compile(rf"(?<![\w-])(?:{_alternation(OTHER_ABNORMALITY_PHRASES)})(?!\w)")
_UNC_OVER_NEG_RE = re.compile(rf"\b(?:{_alternation(UNCERTAIN_OVER_NEGATION)})")
# "pneumonia cannot be excluded": the negated exclusion right after the mention
_UNC_OVER_NEG_POST_RE = re.compile(
    r"^\W*(?:\w+\W+){0,3}?(?:cannot|can ?not|can't|could not|is not|are not|not) (?:be )?(?:entirely |completely )?"
    r"(?:excluded|ruled out)")
# Pre-mention triggers must end a word: "no" must not match "nodule".
_NEG_PRE_RE = re.compile(rf"(?<![\w-])(?:{_alternation(NEGATION_PRE)})(?![\w])")
_NEG_POST_RE = re.compile(rf"^\W*(?:\w+\W+){{0,8}}?(?:{_alternation(NEGATION_POST)})\b")
_UNC_PRE_RE = re.compile(rf"(?<![\w-])(?:{_alternation(UNCERTAINTY_PRE)})(?![\w])")
_UNC_POST_RE = re.compile(rf"^\W*(?:\w+\W+){{0,3}}?(?:{_alternation(UNCERTAINTY_POST)})")
_OR_BEFORE_RE = re.compile(r"(?<![\w-])(?:or|versus|vs\.?|and/or)\s+(?:\w+\W+){0,2}$")
_OR_AFTER_RE = re.compile(r"^\W*(?:\w+\W+){0,1}?(?:or|versus|vs\.?|and/or)\s+\w")
_PSEUDO_RE = re.compile(rf"\b(?:{_alternation(PSEUDO_NEGATION)})\b")
_BOUNDARY_RE = re.compile(_alternation(CLAUSE_BOUNDARY))
_NEG_TERMINATOR_RE = re.compile(_alternation(NEGATION_TERMINATORS))
# Sentence ends: a period not inside a number ("1.5 cm") or an abbreviation; newlines.
_SENTENCE_RE = re.compile(r"(?<!\d)\.(?!\d)|\n|(?<=\?)\s")
# De-identification tokens of the IU collection.
_XRAY_RE = re.compile(r"\bx-?\s*xxxx\b", re.IGNORECASE)
_XXXX_RE = re.compile(r"\bx{4,}\b", re.IGNORECASE)

# Window (in words) a pre-mention uncertainty trigger reaches; negation reaches the clause start,
# and so do the triggers that open a list of alternatives ("differential diagnosis includes A, B, C").
UNCERTAINTY_WINDOW = 6
_LIST_UNCERTAINTY_RE = re.compile(r"\b(?:differential|considerations? (?:include|are)|(?:may|could|might) (?:be )?"
                                  r"(?:represent|reflect|due to|related to|secondary to|include|indicate))")


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in a report: where it is (in the normalized text) and its state."""

    label: str       # a CheXpert label, or OTHER
    start: int
    end: int
    state: float     # POSITIVE, UNCERTAIN or NEGATIVE
    phrase: str      # the matched text (report text: do not log it)


def normalize_report(text: str) -> str:
    """Lower-case, strip the `XXXX` de-identification tokens, collapse whitespace.

    "x-XXXX" (chest x-ray) becomes "x-ray"; any other XXXX becomes "xxxx", a word that no phrase
    matches, so "no XXXX of a pleural effusion" still negates the effusion and "XXXX opacity"
    still asserts the opacity.
    """
    text = _XRAY_RE.sub("x-ray", text)
    text = _XXXX_RE.sub("xxxx", text)
    return _WS.sub(" ", text.lower()).strip()


def _clauses(sentence: str, offset: int) -> list[tuple[int, int]]:
    """(start, end) spans of the clauses of one sentence, in normalized-text coordinates."""
    spans, start = [], 0
    for m in _BOUNDARY_RE.finditer(sentence):
        spans.append((offset + start, offset + m.start()))
        start = m.start()  # the boundary word opens the next clause ("but there is ...")
        if m.group(0) in (";", ":"):
            start = m.end()
    spans.append((offset + start, offset + len(sentence)))
    return [(a, b) for a, b in spans if b > a]


def _clause_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in _SENTENCE_RE.finditer(text):
        spans.extend(_clauses(text[start:m.start()], start))
        start = m.end()
    spans.extend(_clauses(text[start:], start))
    return spans


def _mask_pseudo(text: str) -> str:
    """Blank out pseudo-negations (same length, so offsets stay valid)."""
    return _PSEUDO_RE.sub(lambda m: "_" * len(m.group(0)), text)


def _state(clause: str, start: int, end: int, hedged: bool) -> float:
    """State of the mention clause[start:end] from the triggers in its clause.

    Order (CheXpert's): uncertainty that contains a negation ("cannot exclude") > negation >
    other uncertainty > positive.
    """
    before, inside, after = clause[:start], clause[start:end], clause[end:]
    window = " ".join(before.split()[-UNCERTAINTY_WINDOW:])
    if _UNC_OVER_NEG_RE.search(before + inside) or _UNC_OVER_NEG_POST_RE.search(after):
        return UNCERTAIN
    terminators = list(_NEG_TERMINATOR_RE.finditer(before))
    negation_scope = before[terminators[-1].end():] if terminators else before
    if _NEG_PRE_RE.search(negation_scope) or _NEG_PRE_RE.search(inside) or _NEG_POST_RE.search(after):
        return NEGATIVE
    if (hedged or _UNC_PRE_RE.search(window) or _UNC_POST_RE.search(after) or _LIST_UNCERTAINTY_RE.search(before)
            or _OR_BEFORE_RE.search(before) or _OR_AFTER_RE.search(after)):
        return UNCERTAIN
    return POSITIVE


def find_mentions(text: str) -> list[Mention]:
    """All observation mentions of a report (labels and OTHER abnormalities), with their state.

    Spans refer to `normalize_report(text)`. Overlapping matches of one label keep the first.
    """
    if not isinstance(text, str):
        raise ValueError(f"report text must be a string, got {type(text).__name__}")
    norm = normalize_report(text)
    masked = _mask_pseudo(norm)
    mentions: list[Mention] = []
    for c0, c1 in _clause_spans(masked):
        clause = masked[c0:c1]
        for label, pattern in [*_MENTION_RE.items(), (OTHER, _OTHER_RE)]:
            excluded = [m.span() for m in _EXCLUDED_RE[label].finditer(clause)] if label in _EXCLUDED_RE else []
            hedged_spans = ([m.span() for m in _UNCERTAIN_MENTION_RE[label].finditer(clause)]
                            if label in _UNCERTAIN_MENTION_RE else [])
            for m in pattern.finditer(clause):
                s, e = m.span()
                if any(s < xe and xs < e for xs, xe in excluded):
                    continue
                hedged = any(s < he and hs < e for hs, he in hedged_spans)
                mentions.append(Mention(label, c0 + s, c0 + e, _state(clause, s, e, hedged), norm[c0 + s:c0 + e]))
        # hedged-only mentions ("heart size at the upper limits of normal") that no mention phrase covers
        for label, pattern in _UNCERTAIN_MENTION_RE.items():
            for m in pattern.finditer(clause):
                s, e = m.span()
                if not any(x.label == label and x.start < c0 + e and c0 + s < x.end for x in mentions):
                    mentions.append(Mention(label, c0 + s, c0 + e, _state(clause, s, e, True), norm[c0 + s:c0 + e]))
    return mentions


def _aggregate(states: list[float]) -> float:
    """CheXpert's rule for several mentions of one label: positive > uncertain > negative."""
    if POSITIVE in states:
        return POSITIVE
    if UNCERTAIN in states:
        return UNCERTAIN
    return NEGATIVE


def text_mentions(text: str) -> dict[str, float]:
    """{label: state} for the CheXpert labels a report mentions (1 positive, -1 uncertain, 0 negated).

    Labels the report does not mention are absent (unlike `label_report`, which writes 0 for both).
    "No Finding" is not included; it is derived, not mentioned.
    """
    states: dict[str, list[float]] = {}
    for m in find_mentions(text):
        if m.label != OTHER:
            states.setdefault(m.label, []).append(m.state)
    return {label: _aggregate(s) for label, s in states.items()}


def label_report(text: str) -> np.ndarray:
    """Report text -> float32 (14,) in CheXpert order: 1 positive, -1 uncertain, 0 negative/unmentioned.

    No Finding = 1 when no label but Support Devices, and no OTHER abnormality, is positive or uncertain.
    """
    out = np.zeros(NUM_LABELS, dtype=np.float32)
    abnormal = False
    states: dict[str, list[float]] = {}
    for m in find_mentions(text):
        states.setdefault(m.label, []).append(m.state)
    for label, s in states.items():
        state = _aggregate(s)
        if label != OTHER:
            out[LABEL_INDEX[label]] = state
        if label != SUPPORT_DEVICES and state != NEGATIVE:
            abnormal = True
    out[LABEL_INDEX[NO_FINDING]] = 0.0 if abnormal else POSITIVE
    return out


def label_reports(texts: Iterable[str]) -> np.ndarray:
    """Many reports -> float32 (N, 14); see `label_report`."""
    rows = [label_report(t) for t in texts]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, NUM_LABELS), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# 3. Agreement of the text labeler with the MeSH labels, and the label table
# ---------------------------------------------------------------------------------------------

REQUIRED_COLUMNS = ("uid", "findings", "impression", "mesh")


def read_studies(manifest_path: str | os.PathLike, split: str | None = None) -> pd.DataFrame:
    """One row per study (first row of each uid) with a `report` column = findings + impression.

    Raises ValueError naming the missing columns when the manifest lacks uid/findings/impression/mesh,
    and when `split` is given but the manifest has no `split` column.
    """
    frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if split is not None and "split" not in frame.columns:
        missing.append("split")
    if missing:
        raise ValueError(f"{manifest_path}: manifest lacks column(s) {', '.join(missing)}")
    studies = frame.drop_duplicates("uid", keep="first")
    if split is not None:
        studies = studies[studies["split"] == split]
    studies = studies.reset_index(drop=True)
    studies["report"] = (studies["findings"].str.strip() + " " + studies["impression"].str.strip()).str.strip()
    return studies


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1}


def agreement(mesh_labels: np.ndarray, text_labels: np.ndarray) -> dict:
    """Per-label precision/recall/F1 of text labels against MeSH labels (both (N, 14)).

    Uncertain text labels (-1) count as positive. F1 is NaN for a label nobody marks positive,
    and such labels are left out of the macro average.
    """
    truth = np.asarray(mesh_labels) == POSITIVE
    pred = np.asarray(text_labels) != NEGATIVE
    per_label, tps, fps, fns = {}, 0, 0, 0
    for k, label in enumerate(CHEXPERT_LABELS):
        tp = int(np.sum(truth[:, k] & pred[:, k]))
        fp = int(np.sum(~truth[:, k] & pred[:, k]))
        fn = int(np.sum(truth[:, k] & ~pred[:, k]))
        per_label[label] = {**_prf(tp, fp, fn), "support": int(truth[:, k].sum()), "predicted": int(pred[:, k].sum())}
        tps, fps, fns = tps + tp, fps + fp, fns + fn
    macro = {key: float(np.nanmean([v[key] for v in per_label.values()])) for key in ("precision", "recall", "f1")}
    return {"n_studies": int(len(truth)), "uncertain_as": "positive", "per_label": per_label,
            "micro": _prf(tps, fps, fns), "macro": macro}


def labeler_agreement(manifest_path: str | os.PathLike, split: str | None = None,
                      limit: int | None = None) -> dict:
    """Agreement of `label_report` on each study's findings + impression with `mesh_to_chexpert`.

    split: only studies of this manifest split (e.g. "train", "val"); None = all studies.
    limit: only the first `limit` studies (after the split filter), for quick checks.
    Returns {"n_studies", "uncertain_as": "positive", "per_label": {label: {precision, recall, f1,
    support, predicted}}, "micro": {...}, "macro": {...}}; support = MeSH positives.
    """
    studies = read_studies(manifest_path, split)
    if limit is not None:
        studies = studies.iloc[:limit]
    mesh = np.stack([mesh_to_chexpert(m) for m in studies["mesh"]]) if len(studies) else np.zeros((0, NUM_LABELS))
    text = label_reports(studies["report"])
    log.info("labeler agreement on %d studies (split=%s)", len(studies), split)
    return agreement(mesh, text)


def write_label_table(manifest_path: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """Write one row per study: uid, mesh_<label> (0/1) x14, text_<label> (1/0/-1) x14. Returns the path.

    Column names keep the CheXpert label names ("mesh_No Finding"). Written atomically: a temporary
    file in the target folder, then renamed over `out_csv`.
    """
    studies = read_studies(manifest_path)
    mesh = np.stack([mesh_to_chexpert(m) for m in studies["mesh"]]) if len(studies) else np.zeros((0, NUM_LABELS))
    text = label_reports(studies["report"])
    table = pd.DataFrame({"uid": studies["uid"]})
    for k, label in enumerate(CHEXPERT_LABELS):
        table[f"mesh_{label}"] = mesh[:, k].astype(int)
    for k, label in enumerate(CHEXPERT_LABELS):
        table[f"text_{label}"] = text[:, k].astype(int)
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            table.to_csv(handle, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote labels of %d studies to %s", len(table), out)
    return out
