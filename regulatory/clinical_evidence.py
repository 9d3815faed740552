"""The clinical-evidence sections of the packet document: error analysis and bias audit, read out of the aggregates
the pipeline's clinical_evidence step wrote (`model_core.evaluation.error_analysis` ERROR_SUMMARY and
`bias_audit` BIAS_AUDIT), and their figures.

Whitelists, as everywhere in the packet: known keys only, numbers type- and range-checked, every name or text taken
from the files screened for report text and identifiers (`regulatory.inputs.read_text`). Per-study details and the
example images (ERROR_ANALYSIS, EXAMPLES_PLOT: study ids, patient images) are never read: a figure outside
`PACKET_FIGURES` is refused, not dropped. Each figure is decoded and re-encoded as a plain PNG (no text chunks),
so the packet holds pixels of a chart only, and its SHA-256 is recorded in the document.

Status of each section: "included"; "not run" (the packet was built without clinical evidence); "missing" (the
evidence was expected and a file is absent: the section names it). Only "included" counts as evidence.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Mapping, Sequence

from PIL import Image, UnidentifiedImageError

from model_core.artifacts import BIAS_PLOT, CONFUSION_PLOT, EXAMPLES_PLOT, PREVALENCE_PLOT, QUALITY_PLOT
from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS
from regulatory.inputs import (
    read_ci,
    read_integer,
    read_interval,
    read_mapping,
    read_number,
    read_required,
    read_text,
)

INCLUDED, NOT_RUN, MISSING = "included", "not run", "missing"
TOO_FEW = "too few to estimate"       # what model_core.evaluation.bias_audit writes instead of a number
FINDINGS = tuple(label for label in CHEXPERT_LABELS if label != "No Finding")
# The figures a packet may embed (charts of aggregates), with their captions; EXAMPLES_PLOT shows patient images.
PACKET_FIGURES = {
    CONFUSION_PLOT: ("errors", "Critical findings: generated text vs truth (studies), one 2x2 matrix per finding."),
    PREVALENCE_PLOT: ("errors", "Miss rate and false-alarm rate per finding against its prevalence in the test set."),
    QUALITY_PLOT: ("errors", "Image exposure and contrast of studies with and without a report error."),
    BIAS_PLOT: ("bias", "Critical-finding sensitivity (Wilson 95 % CI) per estimable subgroup; red: below the "
                        "gate's minimum."),
}
REFUSED_FIGURES = {EXAMPLES_PLOT: "it shows patient images"}
MAX_FIGURE_BYTES, MAX_FIGURE_PIXELS = 5_000_000, 4000
_CATEGORY_RE = re.compile(r"^[a-z][a-z_]{0,39}$")


# --------------------------------------------------------------------------- figures

def read_figures(raw) -> dict[str, bytes]:
    """{file name: PNG bytes} of the packet figures, each decoded and re-encoded (metadata dropped); a name
    outside PACKET_FIGURES, a non-PNG or an oversized image is an error naming the file."""
    if raw is None:
        return {}
    figures = read_mapping(raw, "figures")
    out = {}
    for name in sorted(figures, key=str):
        if name in REFUSED_FIGURES:
            raise ValueError(f"figures[{name!r}] must not enter the packet: {REFUSED_FIGURES[name]}")
        if name not in PACKET_FIGURES:
            raise ValueError(f"figures has an unknown figure (allowed: {sorted(PACKET_FIGURES)})")
        data = figures[name]
        if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_FIGURE_BYTES:
            raise ValueError(f"figures[{name!r}] must be PNG bytes of at most {MAX_FIGURE_BYTES} bytes")
        try:
            with Image.open(io.BytesIO(bytes(data))) as image:
                if image.format != "PNG" or max(image.size) > MAX_FIGURE_PIXELS:
                    raise ValueError(f"figures[{name!r}] is not a PNG of at most {MAX_FIGURE_PIXELS} px a side")
                image.load()
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
        except (UnidentifiedImageError, OSError):
            raise ValueError(f"figures[{name!r}] is not a readable PNG image") from None
        out[name] = buffer.getvalue()
    return out


def _figure_entries(figures: Mapping[str, bytes], section: str) -> list[dict]:
    return [{"file": name, "caption": caption, "sha256": hashlib.sha256(figures[name]).hexdigest()}
            for name, (where, caption) in PACKET_FIGURES.items() if where == section and name in figures]


def _status(raw, section: str, data_file: str, missing: Sequence[str]) -> tuple[str, list[str]]:
    """(status, the section's missing files): its data file or one of its figures."""
    wanted = [m for m in missing if m == data_file or PACKET_FIGURES.get(m, ("",))[0] == section]
    if raw is None:
        return (MISSING if wanted else NOT_RUN), wanted
    return (MISSING if wanted else INCLUDED), wanted


# --------------------------------------------------------------------------- error analysis

def _correlation(raw, where: str) -> dict:
    r = read_mapping(raw, where)
    corr = read_mapping(read_required(r, "correlation", where), f"{where}['correlation']")
    values = {k: read_number(corr.get(k), f"{where}['correlation'][{k!r}]") for k in ("value", "ci_low", "ci_high")}
    for k, v in values.items():
        if v is not None and not -1 - 1e-9 <= v <= 1 + 1e-9:
            raise ValueError(f"{where}['correlation'][{k!r}] = {v} is outside [-1, 1]")
    return {"correlation": values,
            **{k: read_number(r.get(k), f"{where}[{k!r}]", unit=True) for k in ("mean_with_error",
                                                                                "mean_without_error")}}


def error_analysis_section(raw, figures: Mapping[str, bytes], missing: Sequence[str], summary_file: str) -> dict:
    """Rates per category with CIs, per-finding counts vs prevalence, confusion per critical finding, image-quality
    correlation (ERROR_SUMMARY), with the error-analysis figures."""
    status, wanted = _status(raw, "errors", summary_file, missing)
    out = {"status": status, "missing": wanted, "figures": _figure_entries(figures, "errors")}
    if raw is None:
        return out
    where = summary_file
    e = read_mapping(raw, where)
    n = read_integer(read_required(e, "studies", where), f"{where}['studies']")
    cats_raw = read_mapping(read_required(e, "categories", where), f"{where}['categories']")
    categories = {}
    for name in cats_raw:
        if not isinstance(name, str) or not _CATEGORY_RE.match(name):
            raise ValueError(f"{where}['categories'] has a key that is not an error-category name")
        w = f"{where}['categories'][{name!r}]"
        row = read_mapping(cats_raw[name], w)
        categories[name] = {"studies": read_integer(read_required(row, "studies", w), f"{w}['studies']"),
                            "errors": read_integer(read_required(row, "errors", w), f"{w}['errors']"),
                            "study_rate": read_ci(read_required(row, "study_rate", w), f"{w}['study_rate']")}
    definitions = read_mapping(e.get("definitions") or {}, f"{where}['definitions']")
    by_raw = read_mapping(read_required(e, "by_finding", where), f"{where}['by_finding']")
    by_finding = {}
    for finding in FINDINGS:
        if finding not in by_raw:
            continue
        w = f"{where}['by_finding'][{finding!r}]"
        row = read_mapping(by_raw[finding], w)
        by_finding[finding] = {
            "positives": read_integer(read_required(row, "positives", w), f"{w}['positives']"),
            "prevalence": read_number(read_required(row, "prevalence", w), f"{w}['prevalence']", unit=True),
            "miss_rate": read_number(row.get("miss_rate"), f"{w}['miss_rate']", unit=True),
            "false_alarm_rate": read_number(row.get("false_alarm_rate"), f"{w}['false_alarm_rate']", unit=True),
            "error_rate": read_number(row.get("error_rate"), f"{w}['error_rate']"),
            "errors": {c: read_integer(row.get(c, 0), f"{w}[{c!r}]") for c in categories}}
    conf_raw = read_mapping(read_required(e, "confusion_critical", where), f"{where}['confusion_critical']")
    confusion = {}
    for finding in CRITICAL_FINDINGS:
        w = f"{where}['confusion_critical'][{finding!r}]"
        row = read_mapping(read_required(conf_raw, finding, f"{where}['confusion_critical']"), w)
        confusion[finding] = {k: read_integer(read_required(row, k, w), f"{w}[{k!r}]") for k in ("tp", "fn", "fp",
                                                                                               "tn")}
    quality = None
    if e.get("image_quality") is not None:
        q = read_mapping(e["image_quality"], f"{where}['image_quality']")
        stats = read_mapping(q.get("statistics") or {}, f"{where}['image_quality']['statistics']")
        quality = {"statistics": {k: read_text(v, f"{where}['image_quality']['statistics'][{k!r}]")
                                  for k, v in sorted(stats.items()) if k in ("exposure", "contrast")},
                   "correlations": {}}
        for key in ("any_error", *categories):
            if q.get(key) is None:
                continue
            w = f"{where}['image_quality'][{key!r}]"
            per = read_mapping(q[key], w)
            quality["correlations"][key] = {s: _correlation(per[s], f"{w}[{s!r}]") for s in ("exposure", "contrast")
                                            if s in per}
    out.update({
        "studies": n,
        "studies_with_errors": read_integer(read_required(e, "studies_with_errors", where),
                                            f"{where}['studies_with_errors']"),
        "study_error_rate": read_ci(read_required(e, "study_error_rate", where), f"{where}['study_error_rate']"),
        "categories": categories,
        "definitions": {c: read_text(definitions[c], f"{where}['definitions'][{c!r}]", 300)
                        for c in categories if isinstance(definitions.get(c), str)},
        "truth": None if e.get("truth") is None else read_text(e["truth"], f"{where}['truth']", 300),
        "by_finding": by_finding, "confusion_critical": confusion, "image_quality": quality})
    return out


# --------------------------------------------------------------------------- bias audit

def _subgroup_row(raw, where: str) -> dict:
    r = read_mapping(raw, where)
    row = {"positives": read_integer(read_required(r, "positives", where), f"{where}['positives']"),
           "negatives": read_integer(read_required(r, "negatives", where), f"{where}['negatives']")}
    if r.get("estimate") == TOO_FEW:
        return {**row, "estimable": False}
    sens = r.get("sensitivity")
    row.update({
        "estimable": True,
        "flag_rate": read_number(r.get("flag_rate"), f"{where}['flag_rate']", unit=True),
        "sensitivity": TOO_FEW if sens == TOO_FEW else read_number(sens, f"{where}['sensitivity']", unit=True),
        "sensitivity_ci": read_interval(None if sens == TOO_FEW else r.get("sensitivity_ci"),
                                        f"{where}['sensitivity_ci']"),
        "specificity": read_number(r.get("specificity"), f"{where}['specificity']", unit=True),
        "specificity_ci": read_interval(r.get("specificity_ci"), f"{where}['specificity_ci']"),
        "below_threshold": None if r.get("below_threshold") is None else bool(r["below_threshold"])})
    return row


def _gap(raw, where: str):
    return TOO_FEW if raw == TOO_FEW else read_ci(raw, where)


def bias_audit_section(raw, figures: Mapping[str, bytes], missing: Sequence[str], audit_file: str) -> dict:
    """Per attribute and subgroup: studies, critical-finding sensitivity/specificity with Wilson CIs or "too few
    to estimate"; fairness gaps with bootstrap CIs; the flagged subgroups (BIAS_AUDIT), with its figure."""
    status, wanted = _status(raw, "bias", audit_file, missing)
    out = {"status": status, "missing": wanted, "figures": _figure_entries(figures, "bias")}
    if raw is None:
        return out
    where = audit_file
    b = read_mapping(raw, where)
    attrs_raw = read_mapping(read_required(b, "attributes", where), f"{where}['attributes']")
    attributes = {}
    for attr in sorted(attrs_raw, key=str):
        name = read_text(attr, f"an attribute name of {where}", 60)
        w = f"{where}['attributes'][{name!r}]"
        entry = read_mapping(attrs_raw[attr], w)
        groups_raw = read_mapping(read_required(entry, "groups", w), f"{w}['groups']")
        groups = {}
        for group in sorted(groups_raw, key=str):
            label = read_text(group, f"a subgroup name of {w}", 60)
            gw = f"{w}['groups'][{label!r}]"
            g = read_mapping(groups_raw[group], gw)
            findings = read_mapping(read_required(g, "findings", gw), f"{gw}['findings']")
            groups[label] = {"studies": read_integer(read_required(g, "studies", gw), f"{gw}['studies']"),
                             "findings": {f: _subgroup_row(findings[f], f"{gw}['findings'][{f!r}]")
                                          for f in CRITICAL_FINDINGS if f in findings}}
        fair_raw = read_mapping(entry.get("fairness") or {}, f"{w}['fairness']")
        fairness = {}
        for finding in CRITICAL_FINDINGS:
            if finding not in fair_raw:
                continue
            fw = f"{w}['fairness'][{finding!r}]"
            f = read_mapping(fair_raw[finding], fw)
            fairness[finding] = {
                key: _gap(read_required(f, key, fw), f"{fw}[{key!r}]")
                for key in ("demographic_parity_difference", "equalized_odds_difference")}
        attributes[name] = {"groups": groups, "fairness": fairness}
    flagged = []
    for i, item in enumerate(b.get("flagged") or []):
        fw = f"{where}['flagged'][{i}]"
        item = read_mapping(item, fw)
        finding = read_required(item, "finding", fw)
        if finding not in CRITICAL_FINDINGS:
            raise ValueError(f"{fw}['finding'] is not a critical finding")
        flagged.append({"attribute": read_text(read_required(item, "attribute", fw), f"{fw}['attribute']", 60),
                        "group": read_text(read_required(item, "group", fw), f"{fw}['group']", 60),
                        "finding": finding,
                        "sensitivity": read_number(item.get("sensitivity"), f"{fw}['sensitivity']", unit=True),
                        "positives": read_integer(item.get("positives"), f"{fw}['positives']", optional=True),
                        "threshold": read_number(item.get("threshold"), f"{fw}['threshold']", unit=True)})
    s = read_mapping(b.get("settings") or {}, f"{where}['settings']")
    # the gate's configured minimum, echoed (a setting, not a measured rate: a test's permissive gate uses -1)
    settings = {"sensitivity_min": read_number(s.get("sensitivity_min"), f"{where}['settings']['sensitivity_min']"),
                **{k: read_integer(s.get(k), f"{where}['settings'][{k!r}]", optional=True)
                   for k in ("min_positives", "min_group", "n_boot")}}
    edge = read_mapping(b.get("edge_cases") or {}, f"{where}['edge_cases']")
    out.update({
        "studies": read_integer(read_required(b, "studies", where), f"{where}['studies']"),
        "attributes": attributes, "flagged": flagged, "settings": settings,
        "edge_cases": {read_text(k, f"an edge-case name of {where}", 60):
                       [read_text(t, f"{where}['edge_cases'][{k!r}]", 80) for t in v]
                       for k, v in sorted(edge.items(), key=lambda kv: str(kv[0])) if isinstance(v, list)}})
    return out
