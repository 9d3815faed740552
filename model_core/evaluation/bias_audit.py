"""Bias audit: critical-finding detection by subgroup, with fairness gaps and their CIs.

Subgroups (per study; `study_attributes`):
    sex          F / M from the indication (IU X-ray states it in about 30 % of studies), else "not stated"
    age band     <40 / 40-64 / ≥65 from the indication; IU X-ray redacts age (XXXX-year-old), so it is counted and
                 reported as not estimable rather than guessed
    views        frontal + lateral / frontal only / lateral only (what the study has)
    edge cases   from the MeSH annotation (`EDGE_CASES`): implants and devices, post-surgical changes, skeletal
                 deformity, image quality marked unsatisfactory; each compared with the studies without it
Per subgroup and critical finding: sensitivity and specificity of the detection head at its operating threshold
(Wilson 95 % CI, as the release gate), the flag rate; a sensitivity below the gate's minimum
(`GateConfig.critical_sensitivity_min`) is flagged. A subgroup with fewer than `min_positives` positives (the gate's
own minimum) says "too few to estimate" instead of a sensitivity, one with fewer than `min_group` studies says it
for everything.
Fairness per attribute and finding, over the groups that can be estimated ("not stated" is never a group to
compare): demographic-parity difference = max − min flag rate; equalized-odds difference = the larger of the
max − min true-positive rate and the max − min false-positive rate (fairlearn's definitions); 95 % percentile
bootstrap CIs over studies (`model_core.stats.resample_weights`: the resamples `bootstrap_ci` draws).
The output holds counts and rates only: no study id, no text (safe for the packet).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from model_core.artifacts import BIAS_AUDIT, BIAS_PLOT  # re-exported for callers
from model_core.chexpert import CRITICAL_FINDINGS, LABEL_INDEX, binarize
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.evaluation.baseline import dataset_paths
from model_core.evaluation.error_analysis import read_predictions
from model_core.files import atomic_write_bytes, atomic_write_text
from model_core.labels.mesh import parse_mesh
from model_core.modeling.model_dir import load_detection
from model_core.stats import percentile_ci, resample_weights, sensitivity_specificity

TOO_FEW = "too few to estimate"
NOT_STATED = "not stated"
# MeSH headings (lower case) of the IU X-ray annotation that make a study an edge case.
EDGE_CASES = {
    "implants / devices": ("catheters, indwelling", "implanted medical device", "medical device", "tube, inserted",
                           "stents", "breast implants", "foreign bodies"),
    "post-surgical changes": ("surgical instruments", "sutures", "mastectomy", "pneumonectomy", "spinal fusion",
                              "colonic interposition"),
    "skeletal deformity": ("scoliosis", "kyphosis", "funnel chest", "pectus carinatum", "deformity"),
    "image quality unsatisfactory": ("technical quality of image unsatisfactory",),
}
AGE_BANDS = ((0, 40, "<40"), (40, 65, "40-64"), (65, 200, "≥65"))


def _age_band(age) -> str:
    if age is None:
        return NOT_STATED
    return next((name for low, high, name in AGE_BANDS if low <= int(age) < high), NOT_STATED)


def study_attributes(metadata: dict, views: set[str]) -> dict[str, str]:
    """One study's subgroups: metadata as `load_iu_xray` gives it (sex, age, mesh) and the views it has."""
    frontal, lateral = bool(views & {"Frontal", "PA", "AP"}), bool(views - {"Frontal", "PA", "AP"})
    headings = {head.lower() for head, _ in parse_mesh(metadata.get("mesh") or "")}
    return {"sex": {"F": "F", "M": "M"}.get(metadata.get("sex"), NOT_STATED),
            "age band": _age_band(metadata.get("age")),
            "views": "frontal + lateral" if frontal and lateral else "frontal only" if frontal else "lateral only",
            **{name: "yes" if headings & set(terms) else "no" for name, terms in EDGE_CASES.items()}}


def _rates(weights: np.ndarray, member: np.ndarray, y: np.ndarray, flagged: np.ndarray) -> dict[str, np.ndarray]:
    """Flag rate, TPR and FPR of one group under each resample weight row (n_boot, S) (NaN: empty)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = weights @ member
        pos, neg = weights @ (member & y), weights @ (member & ~y)
        return {"flag": (weights @ (member & flagged)) / n, "tpr": (weights @ (member & y & flagged)) / pos,
                "fpr": (weights @ (member & ~y & flagged)) / neg}


def _gap(rates: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(rates)
    with np.errstate(invalid="ignore"):
        return stacked.max(axis=0) - stacked.min(axis=0)   # NaN where a group is empty in a resample


def bias_audit(attributes: list[dict[str, str]], truth: np.ndarray, probabilities: np.ndarray, thresholds: dict,
               sensitivity_min: float = 0.98, min_positives: int = 10, min_group: int = 30, n_boot: int = 1000,
               seed: int = 0) -> dict:
    """attributes: `study_attributes` per study (S); truth (S, 14) label vectors (uncertain counts positive);
    probabilities (S, 14) of the detection head (calibrated); thresholds: {finding: operating threshold}."""
    truth, probabilities = binarize(np.asarray(truth)), np.asarray(probabilities, dtype=np.float64)
    if not attributes or truth.shape != probabilities.shape or truth.shape != (len(attributes), truth.shape[1]):
        raise ValueError(f"bias audit needs one attribute dict, label vector and probability vector per study; got "
                         f"{len(attributes)} studies, labels {truth.shape}, probabilities {probabilities.shape}")
    weights = resample_weights(len(attributes), n_boot, seed)
    point = np.ones((1, len(attributes)))
    out, flagged_groups = {}, []
    for attribute in attributes[0]:
        values = np.array([a[attribute] for a in attributes])
        groups = {}
        for group in sorted(set(values)):
            member = values == group
            groups[group] = {"studies": int(member.sum()), "findings": {}}
            for finding in CRITICAL_FINDINGS:
                y, p = truth[member, LABEL_INDEX[finding]].astype(int), probabilities[member, LABEL_INDEX[finding]]
                t = float(thresholds.get(finding, 0.5))
                s = sensitivity_specificity(y, p, t)
                row = {"positives": int(y.sum()), "negatives": int((1 - y).sum()), "threshold": t,
                       "flag_rate": float((p >= t).mean()), "sensitivity": s["sensitivity"],
                       "sensitivity_ci": s["sensitivity_ci"], "specificity": s["specificity"],
                       "specificity_ci": s["specificity_ci"], "below_threshold": None}
                if member.sum() < min_group:
                    row = {"positives": row["positives"], "negatives": row["negatives"], "estimate": TOO_FEW}
                elif y.sum() < min_positives:
                    row.update(sensitivity=TOO_FEW, sensitivity_ci=None)
                else:
                    row["below_threshold"] = bool(s["sensitivity"] < sensitivity_min)
                    if row["below_threshold"]:
                        flagged_groups.append({"attribute": attribute, "group": group, "finding": finding,
                                               "sensitivity": s["sensitivity"], "positives": int(y.sum()),
                                               "threshold": sensitivity_min})
                groups[group]["findings"][finding] = row
        fairness = {}
        for finding in CRITICAL_FINDINGS:
            k = LABEL_INDEX[finding]
            y, flagged = truth[:, k] == 1, probabilities[:, k] >= float(thresholds.get(finding, 0.5))
            sized = [g for g in groups if g != NOT_STATED and groups[g]["studies"] >= min_group]
            odds = [g for g in sized if groups[g]["findings"][finding]["positives"] >= min_positives
                    and groups[g]["findings"][finding]["negatives"] >= min_positives]
            entry = {"groups_compared_parity": sized, "groups_compared_odds": odds}
            for key, compared in (("demographic_parity_difference", sized), ("equalized_odds_difference", odds)):
                if len(compared) < 2:
                    entry[key] = TOO_FEW
                    continue
                masks = [values == g for g in compared]
                at = {w: [_rates(m_, member, y, flagged) for member in masks] for w, m_ in (("point", point),
                                                                                            ("boot", weights))}
                if key == "demographic_parity_difference":
                    gaps = {w: _gap([r["flag"] for r in at[w]]) for w in at}
                else:
                    gaps = {w: np.fmax(_gap([r["tpr"] for r in at[w]]), _gap([r["fpr"] for r in at[w]])) for w in at}
                entry[key] = percentile_ci(gaps["point"][0], gaps["boot"])
            fairness[finding] = entry
        out[attribute] = {"counts": {g: groups[g]["studies"] for g in groups}, "groups": groups,
                          "fairness": fairness}
    ages = sum(a["age band"] != NOT_STATED for a in attributes)
    return {
        "studies": len(attributes), "attributes": out, "flagged": flagged_groups,
        "age": f"age stated for {ages} of {len(attributes)} studies" + (
            " (IU X-ray redacts age): no age band can be estimated" if ages == 0 else ""),
        "sex": f"sex stated for {sum(a['sex'] != NOT_STATED for a in attributes)} of {len(attributes)} studies",
        "settings": {"sensitivity_min": sensitivity_min, "min_positives": min_positives, "min_group": min_group,
                     "n_boot": n_boot, "seed": seed, "ci": "Wilson 95 % (rates); percentile bootstrap 95 % (gaps)",
                     "predictions": "detection head at the validation-chosen operating thresholds"},
        "edge_cases": {name: list(terms) for name, terms in EDGE_CASES.items()},
    }


def plot_subgroup_sensitivity(audit: dict, path: Path) -> None:
    """Sensitivity with its Wilson CI per estimable subgroup and critical finding; the gate's minimum dashed."""
    fig = Figure(figsize=(12, 6))
    axes = fig.subplots(1, len(CRITICAL_FINDINGS), sharey=True)
    labels = [(attr, group) for attr, entry in audit["attributes"].items() for group in entry["groups"]]
    for ax, finding in zip(axes, CRITICAL_FINDINGS):
        for y, (attr, group) in enumerate(labels):
            row = audit["attributes"][attr]["groups"][group]["findings"][finding]
            if isinstance(row.get("sensitivity"), float):
                low, high = row["sensitivity_ci"]
                colour = "#c0392b" if row["below_threshold"] else "#3b6ea8"
                value = row["sensitivity"]   # Wilson bounds can sit a rounding error inside the point: clip
                ax.errorbar(value, y, xerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]], fmt="o", color=colour,
                            capsize=3)
            else:
                ax.text(0.02, y, TOO_FEW, va="center", fontsize=6, color="grey")
        ax.axvline(audit["settings"]["sensitivity_min"], ls="--", color="grey")
        ax.set_xlim(0, 1.02)
        ax.set_title(finding, fontsize=10)
        ax.set_xlabel("sensitivity (Wilson 95 % CI)", fontsize=8)
    axes[0].set_yticks(range(len(labels)), [f"{a}: {g}" for a, g in labels], fontsize=7)
    axes[0].set_ylim(len(labels) - 0.4, -0.6)   # top to bottom, with room for the first and last rows
    fig.suptitle("Critical-finding sensitivity by subgroup (red: below the gate's minimum)", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def run_bias_audit(cfg, model_dir: str | Path, evaluation_dir: str | Path, out_dir: str | Path) -> dict:
    """The pipeline step: the bias audit of the evaluated test studies (`evaluation_dir/predictions.jsonl`, the
    model's operating thresholds from `model_dir`, subgroups from `cfg.data`'s test split); writes BIAS_AUDIT and
    BIAS_PLOT into out_dir and returns the audit."""
    records = read_predictions(evaluation_dir)
    if any(r["probabilities"] is None for r in records):
        raise ValueError("predictions.jsonl has records without detection_probabilities")
    root, manifest = dataset_paths(cfg.data)
    dataset = load_iu_xray(root=root, split="test", views=("Frontal", "Lateral"), manifest=manifest,
                           image_size=cfg.data.image_size, limit_studies=cfg.data.limit_studies, verify=False)
    studies = {s["study_id"]: s for s in group_studies(dataset)}
    if any(r["study_id"] not in studies for r in records):
        raise ValueError(f"evaluated studies are missing from the test split of {manifest.name}")
    attributes = []
    for r in records:
        study = studies[r["study_id"]]
        views = {dataset["metadata"][i]["view"] for i in study["frontal_rows"] + study["lateral_rows"]}
        attributes.append(study_attributes(study["metadata"], views))
    audit = bias_audit(attributes, np.array([r["truth"] for r in records]),
                       np.array([r["probabilities"] for r in records]),
                       load_detection(model_dir).get("thresholds", {}), cfg.gate.critical_sensitivity_min,
                       cfg.gate.min_positives, n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_subgroup_sensitivity(audit, out / BIAS_PLOT)
    atomic_write_text(out / BIAS_AUDIT, json.dumps(audit, indent=2, default=float))
    return audit
