"""View blocks of the packet's clinical-evidence sections: error analysis and bias audit (tables and the embedded
charts). A section that was not run, or whose files are missing, says so in a banner instead of showing nothing."""

from __future__ import annotations

from typing import Mapping

from model_core.chexpert import CRITICAL_FINDINGS
from regulatory.clinical_evidence import INCLUDED, TOO_FEW
from regulatory.formatting import ci_text, fmt, pair_text
from regulatory.view_blocks import cell, table_block

EXAMPLES_NOTE = ("Example studies per error category with detection-head heatmaps, and the per-study error list, are "
                 "kept with the run's internal records (MLflow): they show patient images and study identifiers and "
                 "never enter this packet.")


def figure_blocks(section: dict, figures: Mapping[str, bytes] | None) -> list[dict]:
    """One figure block per chart of the section; `png` is None when the rendering was given no bytes for it."""
    figures = figures or {}
    return [{"kind": "figure", "file": f["file"], "caption": f["caption"], "sha256": f["sha256"],
             "png": figures.get(f["file"])} for f in section["figures"]]


def _absent_banner(section: dict, what: str) -> list[dict]:
    if section["status"] == INCLUDED:
        return []
    if section["missing"]:
        text = (f"{what}: MISSING. The run was expected to provide {', '.join(section['missing'])}, which is absent; "
                f"the {what.lower()} is incomplete and does not count as evidence for this version.")
    else:
        text = (f"{what}: NOT RUN. This packet was built without the pipeline's clinical-evidence step, so no "
                f"{what.lower()} is documented for this version.")
    return [{"kind": "banner", "tone": "bad", "text": text}]


def _category(name: str) -> str:
    return name.replace("_", " ")


def error_analysis_blocks(e: dict, figures: Mapping[str, bytes] | None = None) -> list[dict]:
    blocks = _absent_banner(e, "Error analysis")
    if "studies" not in e:
        return blocks + [{"kind": "note", "text": EXAMPLES_NOTE}]
    blocks += [{"kind": "p", "text": f"Generated drafts of the {e['studies']} held-out test studies compared with "
                                     f"the reference: {e['studies_with_errors']} studies have at least one error; "
                                     f"share of studies with an error {ci_text(e['study_error_rate'])} (95 % "
                                     "percentile bootstrap over studies)."
                                     + (f" Truth: {e['truth']}." if e["truth"] else "")},
               {"kind": "h", "text": "Error rates per category"},
               table_block(["Category", "Definition", "Studies with the error, rate (95 % CI)", "Errors"],
                           [[cell(_category(c), "strong"), e["definitions"].get(c, "-"),
                             f"{r['studies']}: {ci_text(r['study_rate'])}", str(r["errors"])]
                            for c, r in e["categories"].items()], [0.2, 0.4, 0.28, 0.12])]
    rows = []
    for finding, c in e["confusion_critical"].items():
        pos, neg = c["tp"] + c["fn"], c["fp"] + c["tn"]
        rows.append([cell(finding, "strong"), str(c["tp"]), str(c["fn"]), str(c["fp"]), str(c["tn"]),
                     fmt(c["tp"] / pos if pos else None), fmt(c["tn"] / neg if neg else None)])
    blocks += [{"kind": "h", "text": "Confusion per critical finding (generated text vs truth)"},
               table_block(["Finding", "TP", "FN", "FP", "TN", "Text sensitivity", "Text specificity"], rows,
                           [0.25, 0.1, 0.1, 0.1, 0.1, 0.175, 0.175])]
    descriptive = [c for c in e["categories"] if c not in ("missed_finding", "hallucinated_finding")]
    rows = [[cell(f + (" *" if f in CRITICAL_FINDINGS else ""), "strong"), str(r["positives"]), fmt(r["prevalence"]),
             fmt(r["miss_rate"]), fmt(r["false_alarm_rate"]), " / ".join(str(r["errors"].get(c, 0))
                                                                         for c in descriptive)]
            for f, r in e["by_finding"].items()]
    blocks += [{"kind": "h", "text": "Error rate vs finding prevalence"},
               table_block(["Finding (* critical)", "Positives", "Prevalence", "Miss rate (FN / pos)",
                            "False-alarm rate (FP / neg)", " / ".join(_category(c) for c in descriptive)], rows,
                           [0.22, 0.1, 0.11, 0.14, 0.15, 0.28])]
    blocks += figure_blocks({"figures": [f for f in e["figures"] if "quality" not in f["file"]]}, figures)
    blocks.append({"kind": "h", "text": "Errors vs image quality"})
    q = e["image_quality"]
    if q is None:
        blocks.append({"kind": "p", "text": "Image-quality statistics: not computed."})
    else:
        rows = [[cell(_category(err), "strong"), stat,
                 pair_text(v["correlation"]["value"], [v["correlation"]["ci_low"], v["correlation"]["ci_high"]]),
                 fmt(v["mean_with_error"]), fmt(v["mean_without_error"])]
                for err, per in q["correlations"].items() for stat, v in per.items()]
        blocks += [{"kind": "p", "text": "Point-biserial correlation of a study having the error with each image "
                                         "statistic (95 % bootstrap CI): "
                                         + "; ".join(f"{k}: {v}" for k, v in q["statistics"].items()) + "."},
                   table_block(["Error", "Statistic", "Correlation (95 % CI)", "Mean with error",
                                "Mean without error"], rows, [0.24, 0.14, 0.26, 0.18, 0.18])]
    blocks += figure_blocks({"figures": [f for f in e["figures"] if "quality" in f["file"]]}, figures)
    return blocks + [{"kind": "note", "text": EXAMPLES_NOTE}]


def _subgroup_cell(row: dict | None) -> dict:
    if row is None:
        return cell("n/a")
    if not row["estimable"]:
        return cell(f"{TOO_FEW}\n{row['positives']} pos", "warn")
    if row["sensitivity"] == TOO_FEW:
        return cell(f"{TOO_FEW}\n{row['positives']} pos; spec {fmt(row['specificity'])}", "warn")
    text = f"{pair_text(row['sensitivity'], row['sensitivity_ci'])}\n{row['positives']} pos; spec " \
           f"{fmt(row['specificity'])}"
    return cell(text, "bad" if row["below_threshold"] else None)


def bias_audit_blocks(b: dict, figures: Mapping[str, bytes] | None = None) -> list[dict]:
    blocks = _absent_banner(b, "Bias audit")
    if "studies" not in b:
        return blocks
    s = b["settings"]
    blocks.append({"kind": "p", "text": f"Critical-finding detection (detection head at the validation-chosen "
                                        f"operating thresholds) by subgroup of the {b['studies']} held-out test "
                                        "studies. Sensitivity with its Wilson 95 % CI; a subgroup with fewer than "
                                        f"{s['min_positives']} positives says '{TOO_FEW}' for sensitivity, one with "
                                        f"fewer than {s['min_group']} studies for everything. Flagged: an estimable "
                                        f"sensitivity below the gate's minimum {fmt(s['sensitivity_min'])}."})
    if b["flagged"]:
        flagged = "; ".join(f"{f['finding']} in {f['attribute']} = {f['group']}: sensitivity "
                            f"{fmt(f['sensitivity'])} ({f['positives']} positives)" for f in b["flagged"])
        blocks.append({"kind": "banner", "tone": "bad", "text": f"{len(b['flagged'])} subgroup(s) flagged: {flagged}"})
    else:
        blocks.append({"kind": "banner", "tone": "good", "text": "No estimable subgroup falls below the critical "
                                                                 "sensitivity minimum."})
    for attr, entry in b["attributes"].items():
        rows = [[cell(group, "strong"), str(g["studies"])] + [_subgroup_cell(g["findings"].get(f))
                                                             for f in CRITICAL_FINDINGS]
                for group, g in entry["groups"].items()]
        blocks += [{"kind": "h", "text": f"By {attr}"},
                   table_block(["Subgroup", "Studies", *(f"{f}: sensitivity (95 % CI)" for f in CRITICAL_FINDINGS)],
                               rows, [0.16, 0.08, 0.19, 0.19, 0.19, 0.19])]
    rows = [[cell(attr, "strong"), f, ci_text(v["demographic_parity_difference"])
             if v["demographic_parity_difference"] != TOO_FEW else cell(TOO_FEW, "warn"),
             ci_text(v["equalized_odds_difference"]) if v["equalized_odds_difference"] != TOO_FEW
             else cell(TOO_FEW, "warn")]
            for attr, entry in b["attributes"].items() for f, v in entry["fairness"].items()]
    blocks += [{"kind": "h", "text": "Fairness gaps between estimable subgroups ('not stated' is never compared)"},
               table_block(["Attribute", "Finding", "Demographic-parity difference (95 % CI)",
                            "Equalized-odds difference (95 % CI)"], rows, [0.22, 0.2, 0.29, 0.29]),
               {"kind": "note", "text": "Demographic-parity difference: max - min flag rate over the compared "
                                        "subgroups; equalized-odds difference: the larger of the max - min "
                                        "true-positive and false-positive rates; 95 % percentile bootstrap CIs over "
                                        f"studies (n_boot = {s['n_boot']})."}]
    if b["edge_cases"]:
        blocks += [{"kind": "h", "text": "Edge cases (from the MeSH annotation)"},
                   {"kind": "list",
                    "items": [f"{name}: {', '.join(terms)}" for name, terms in b["edge_cases"].items()]}]
    return blocks + figure_blocks(b, figures)
