"""The view model of a packet document: titles, banners and sections as generic blocks (h, p, note, list,
banner, table) that the HTML template and the PDF renderer both draw, so the two renderings show the same.
"""

from __future__ import annotations

from typing import Mapping

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS
from regulatory.formatting import ci_text, fmt, fmt_ci, pair_text
from regulatory.labeling import OUTLINE
from regulatory.sections import LOWER_IS_BETTER, NOT_RECORDED, SPLITS, SUMMARY_KEYS
from regulatory.view_blocks import cell, table_block
from regulatory.view_clinical import bias_audit_blocks, error_analysis_blocks
from regulatory.view_evidence import (
    DEV_KEY_WARNING,
    champion_blocks,
    estar_blocks,
    gmlp_blocks,
    model_file_blocks,
    pathway_blocks,
    pccp_blocks,
    sbom_blocks,
)

_RISK_TONE = {"acceptable": "good", "needs review": "warn", "unacceptable": "bad"}


def view_model(doc: dict, figures: Mapping[str, bytes] | None = None) -> dict:
    """Titles, banners and sections as generic blocks (h, p, note, list, banner, table, figure) both renderers
    draw; figures: {file name: PNG bytes} of the charts the document lists (`regulatory.clinical_evidence`)."""
    p, dev, data, perf, gate = (doc[k] for k in ("packet", "device", "data", "performance", "gate"))
    rejected = p["status"] == "rejected"
    verdict = doc["pccp"]["verdict"]
    title = "Regulatory Technical Documentation Packet (De Novo / 510(k))"
    cover = [table_block(None, [
        ["Device (model)", p["model_name"]],
        ["Version", p["model_version"]],
        ["Evaluation run", p["run_id"]],
        ["Packet created (UTC)", p["created"]],
        ["Release-gate decision", cell(gate["decision"].upper() + (" - NOT PROMOTED" if rejected else ""),
                                        "bad" if rejected else "good")],
        ["PCCP verdict", cell(verdict["verdict"].upper(), "good" if verdict["within"] else "bad")],
        ["Regulatory pathway", doc["pathway"]["recommended_pathway"]],
        ["Packet schema", doc["schema"]],
    ], [0.3, 0.7], kv=True)]
    if rejected:
        cover.append({"kind": "banner", "tone": "bad", "text": doc["release_statement"]})
    if not doc["pathway"]["complete"]:
        open_items = [f"{q['device_name']} ({q['k_number']}): {', '.join(q['placeholders'])}"
                      for q in doc["pathway"]["predicates"] if q["placeholders"]]
        cover.append({"kind": "banner", "tone": "warn", "text":
                      "NOT SUBMISSION-READY: the predicate entries (configs/predicate.yaml) still hold placeholders "
                      "for the regulatory team to complete: " + "; ".join(open_items) + "."})
    if doc["signature"]["development"]:
        cover.append({"kind": "banner", "tone": "warn", "text": DEV_KEY_WARNING})
    cover.append({"kind": "note", "text": doc["phi_statement"]})

    blocks = {
        "device": [{"kind": "h", "text": "Device description"}, {"kind": "p", "text": dev["description"]},
                   {"kind": "h", "text": "Intended use"}, {"kind": "p", "text": dev["intended_use"]}],
        "indications": [
            {"kind": "h", "text": "Indications for use"}, {"kind": "p", "text": dev["indications"]},
            {"kind": "h", "text": "Contraindications"}, {"kind": "list", "items": dev["contraindications"]},
            {"kind": "h", "text": "Warnings and precautions"}, {"kind": "list", "items": dev["warnings"]}],
        "pathway": pathway_blocks(doc),
        "data": _data_blocks(data),
        "performance": _performance_blocks(perf),
        "gate": _gate_blocks(gate, rejected),
        "errors": error_analysis_blocks(doc["error_analysis"], figures),
        "bias": bias_audit_blocks(doc["bias_audit"], figures),
        "risk": _risk_blocks(doc["risk_analysis"], rejected),
        "pccp": pccp_blocks(doc["pccp"]),
        "champion": champion_blocks(doc["champion"]),
        "versions": _versions_blocks(doc["versions"]) + model_file_blocks(doc["model_files"]),
        "sbom": sbom_blocks(doc["sbom"]),
        "estar": estar_blocks(doc["estar"]),
        "gmlp": gmlp_blocks(doc["gmlp"]),
        "release": _release_blocks(doc, rejected),
    }
    sections = [{"title": title_, "blocks": blocks[key], "number": number}
                for number, (key, title_) in enumerate(OUTLINE, 1)]
    status = "REJECTED CANDIDATE - NOT PROMOTED" if rejected else "promoted by release gate"
    return {"title": title, "subtitle": f"{p['model_name']} v{p['model_version']} - run {p['run_id']} - {p['created']}",
            "cover": cover, "sections": sections, "rejected": rejected,
            "running_head": f"Regulatory packet - {p['model_name']} v{p['model_version']} - {status}",
            "footer": "DRAFT - confidential - contains no PHI"}


def _data_blocks(data: dict) -> list[dict]:
    roles = dict(SPLITS)
    split_rows = [[s, roles[s], "n/a" if data["studies_per_split"][s] is None else str(data["studies_per_split"][s]),
                   "n/a" if data["images_per_split"][s] is None else str(data["images_per_split"][s])]
                  for s, _ in SPLITS]
    kv = [["Dataset", data["dataset"]], ["License", data["licence"]]]
    if data["citation"]:
        kv.append(["Citation", data["citation"]])
    if data["label_source"]:
        kv.append(["Label source", data["label_source"]])
    blocks = [table_block(None, kv, [0.25, 0.75], kv=True),
              {"kind": "h", "text": "Studies per split"},
              table_block(["Split", "Role", "Studies", "Images"], split_rows, [0.12, 0.58, 0.15, 0.15]),
              {"kind": "h", "text": "Data integrity hashes (SHA-256)"},
              table_block(["Artifact", "SHA-256"], [
                  ["Manifest (all splits)", cell(data["manifest_sha256"], "mono")],
                  ["Image digest", cell(data["image_digest"], "mono")],
                  ["Split assignment", cell(data["splits_sha256"] or "n/a", "mono")],
              ], [0.24, 0.76]),
              {"kind": "h", "text": "Representativeness"}]
    for i, note in enumerate(data["notes"]):
        blocks.append({"kind": "banner", "tone": "warn", "text": note} if i == 0 and data["is_iu_xray_demo"]
                      else {"kind": "p", "text": note})
    return blocks


def _risk_blocks(risk: dict, rejected: bool) -> list[dict]:
    risk_rows = [[r["hazard"], r["cause"], r["mitigation"], f"{r['metric']}:\n{r['measured']}", r["criterion"],
                  cell(f"{r['residual_risk'].upper()}\n{r['basis']}", _RISK_TONE[r["residual_risk"]])]
                 for r in risk["rows"]]
    return [
        {"kind": "p", "text": "Hazard, cause, risk control and residual risk per hazard (ISO 14971). Each residual "
                              "risk is read off the measured metric and its acceptance criterion: acceptable when "
                              "the linked release-gate check passed, unacceptable when it failed, needs review when "
                              "no acceptance criterion or measurement exists."},
        table_block(["Hazard", "Cause", "Risk control (mitigation)", "Linked measurement", "Acceptance criterion",
                     "Residual risk"], risk_rows, [0.14, 0.15, 0.2, 0.22, 0.13, 0.16]),
        {"kind": "banner", "tone": "bad" if rejected else "warn", "text": "Overall residual risk: " + risk["overall"]},
    ]


def _release_blocks(doc: dict, rejected: bool) -> list[dict]:
    sig = doc["signature"]
    signed = ("This packet's SHA256SUMS is signed (Ed25519, detached signature in SHA256SUMS.sig) with the key "
              f"whose id (SHA-256 of the public key) is {sig['key_id']}"
              + (": a DEVELOPMENT key, not evidence for a release." if sig["development"] else ".")
              if sig["signed"] else "This packet is not signed.")
    return [
        {"kind": "banner", "tone": "bad" if rejected else "good", "text": doc["release_statement"]},
        {"kind": "h", "text": "Review and approval"},
        table_block(["Role", "Name", "Signature", "Date"],
                    [["Prepared by (ML engineering)", "", "", ""], ["Reviewed by (Regulatory Affairs)", "", "", ""],
                     ["Approved by (Quality Assurance)", "", "", ""]], [0.34, 0.26, 0.24, 0.16], tall=True),
        {"kind": "h", "text": "Integrity and signature"},
        {"kind": "p", "text": signed + " `rrg packet verify FILE` re-hashes every file and checks the signature "
                                       "against the trusted public keys."},
        {"kind": "note", "text": "Reproducibility: rebuilding this packet from the same run inputs with the same "
                                 "signing key yields byte-identical packet.json, packet.html and packet.pdf; "
                                 "SHA256SUMS lists each file's hash."},
    ]


def _performance_blocks(perf: dict) -> list[dict]:
    blocks = [{"kind": "p", "text":
               f"Held-out test set: {perf['n_studies']} studies. The figures below were computed by the evaluation "
               "pipeline (model_core.evaluation) and are reproduced unchanged. Intervals are 95 % study-level "
               "percentile bootstrap intervals"
               + (f" (n_boot = {perf['bootstrap']['n_boot']}, seed {perf['bootstrap']['seed']})"
                  if perf["bootstrap"] and perf["bootstrap"]["n_boot"] is not None else "")
               + ", except sensitivity and specificity (Wilson score). n/a: not defined (e.g. no positive cases) or "
                 "not reported."}]

    base = perf["baseline"]
    rows = []
    for key in SUMMARY_KEYS:
        ci = perf["summary"][key]
        rows.append([cell(key, "strong"), "lower" if key in LOWER_IS_BETTER else "higher", ci_text(ci),
                     "n/a" if ci["n_boot"] is None else str(ci["n_boot"]),
                     "not reported" if base is None or base[key] is None else ci_text(base[key])])
    blocks += [{"kind": "h", "text": "Report quality and baseline comparison"},
               table_block(["Metric", "Better", "Model (95 % CI)", "n_boot", "Template baseline (95 % CI)"], rows,
                           [0.2, 0.1, 0.27, 0.1, 0.33])]

    rows = []
    for f in CRITICAL_FINDINGS:
        c = perf["critical_findings"][f]
        rows.append([cell(f, "strong"), fmt(c["threshold"]), pair_text(c["sensitivity"], c["sensitivity_ci"]),
                     pair_text(c["specificity"], c["specificity_ci"]), f"{c['tp']} / {c['fn']}",
                     f"{c['tn']} / {c['fp']}", f"{c['positives']} / {c['negatives']}", fmt(c["flag_rate"])])
    blocks += [{"kind": "h", "text": "Critical findings: detection at the validation-chosen operating points"},
               table_block(["Finding", "Threshold", "Sensitivity (95 % CI)", "Specificity (95 % CI)", "TP / FN",
                            "TN / FP", "Pos / Neg", "Flag rate"], rows,
                           [0.15, 0.09, 0.19, 0.19, 0.09, 0.1, 0.1, 0.09])]

    rows = []
    for label in CHEXPERT_LABELS:
        r = perf["per_label"][label]
        name = cell(label + (" *" if label in CRITICAL_FINDINGS else ""), "strong")
        if r is None:
            rows.append([name, "n/a", "n/a", "n/a", "not reported"])
        else:
            rows.append([name, str(r["support"]), fmt(r["precision"]), fmt(r["recall"]),
                         fmt_ci(r["f1"], r["f1_ci_low"], r["f1_ci_high"])])
    blocks += [{"kind": "h", "text": "Per-finding clinical efficacy (labeler on the draft vs reference labels)"},
               table_block(["Finding (* critical)", "Support", "Precision", "Recall", "F1 (95 % CI)"], rows,
                           [0.32, 0.12, 0.14, 0.14, 0.28])]

    h = perf["hallucination"]
    gt = h["vs_ground_truth"]
    rows = [["Hallucination rate vs ground truth", ci_text(gt["rate"])],
            ["Drafts with an unsupported critical assertion", f"{gt['reports_with_unsupported_critical']} of "
                                                              f"{gt['reports']}"],
            ["Unsupported / all critical assertions",
             "n/a" if gt["critical_assertions"] is None else
             f"{'n/a' if gt['unsupported_assertions'] is None else gt['unsupported_assertions']} / "
             f"{gt['critical_assertions']} (per-assertion rate {fmt(gt['per_assertion_rate'])})"]]
    if gt["by_finding"]:
        rows.append(["Unsupported assertions by finding", "; ".join(
            f"{f} {'n/a' if n is None else n}" for f, n in gt["by_finding"].items())])
    if "vs_detection_head" in h:
        rows.append(["Text vs detection head disagreement (QA flag rate)", ci_text(h["vs_detection_head"]["rate"])])
    blocks += [{"kind": "h", "text": "Hallucination of critical findings"},
               table_block(None, rows, [0.42, 0.58], kv=True)]

    cal = perf["calibration"]
    blocks.append({"kind": "h", "text": "Calibration of the detection head"})
    if cal is None:
        blocks.append({"kind": "p", "text": "Calibration: not reported."})
    else:
        blocks.append(table_block(None, [["Temperature (fitted on validation)", fmt(cal["temperature"], 3)],
                                         ["Test ECE before temperature scaling", fmt(cal["test_ece_uncalibrated"], 4)],
                                         ["Test ECE after temperature scaling", fmt(cal["test_ece"], 4)]],
                                  [0.42, 0.58], kv=True))

    lat = perf["latency"]
    blocks.append({"kind": "h", "text": "Generation latency"})
    if lat is None:
        blocks.append({"kind": "p", "text": "Latency: not reported."})
    else:
        rows = []
        for key, label in (("batch_1", "Batch 1, per report"), ("batch_8_per_report", "Batch 8, per report")):
            r = lat[key]
            rows.append([label] + (["n/a", "n/a", "n/a"] if r is None else [
                fmt(r["p50_ms"], 0), fmt(r["p95_ms"], 0), "n/a" if r["n"] is None else str(r["n"])]))
        blocks.append(table_block(["Setting", "p50 (ms)", "p95 (ms)", "n"], rows, [0.4, 0.2, 0.2, 0.2]))
        beams = "n/a" if lat["num_beams"] is None else lat["num_beams"]
        threads = "n/a" if lat["threads"] is None else lat["threads"]
        blocks.append({"kind": "note", "text": f"Beam search with {beams} beams, {threads} CPU threads, on the "
                                               "evaluation machine (not the deployment hardware)."})
    return blocks


def _gate_blocks(gate: dict, rejected: bool) -> list[dict]:
    blocks = [{"kind": "banner", "tone": "bad" if rejected else "good",
               "text": f"Decision: {gate['decision'].upper()} (gate {'FAILED' if rejected else 'passed'})"}]
    if gate["reasons"]:
        blocks += [{"kind": "h", "text": "Reasons"}, {"kind": "list", "items": gate["reasons"]}]
    rows = [[c["name"], c["finding"] or "-", c["metric"], fmt(c["value"]), fmt(c["ci_low"]),
             f"{c['comparison']} {fmt(c['threshold'])}",
             cell("PASS" if c["passed"] else "FAIL", "good" if c["passed"] else "bad"), c["reason"]]
            for c in gate["checks"]]
    blocks += [{"kind": "h", "text": f"Checks ({len(gate['checks'])})"},
               table_block(["Check", "Finding", "Metric", "Value", "CI low", "Criterion", "Result", "Reason"],
                           rows or [["(no checks recorded)", "", "", "", "", "", "", ""]],
                           [0.2, 0.11, 0.12, 0.065, 0.065, 0.095, 0.065, 0.28]),
               {"kind": "note", "text": "Value is the point estimate and CI low the lower 95 % bound as supplied with "
                                        "each check; the gate may compare a confidence bound rather than the point "
                                        "estimate (see Reason and the gate configuration). Result is the gate's own "
                                        "decision, reproduced unchanged."}]
    if gate["config"]:
        blocks += [{"kind": "h", "text": "Gate configuration"},
                   table_block(None, [[k, "n/a" if v is None else str(v)] for k, v in gate["config"].items()],
                               [0.45, 0.55], kv=True)]
    return blocks


def _versions_blocks(v: dict) -> list[dict]:
    """Python, model_core, the git commit and whether the working tree was clean, package versions: as recorded
    with the model at training time, or "not recorded"."""
    if v["recorded"]:
        blocks = [{"kind": "p", "text": "Recorded with the model at training time (the model card's provenance); "
                                        "the environment this packet was built in is not sampled."}]
        dirty = ("unknown" if v["git_dirty"] is None
                 else cell("yes (not reproducible from the commit alone)", "bad") if v["git_dirty"] else "no")
    else:
        blocks = [{"kind": "banner", "tone": "warn", "text":
                   "Software versions were not recorded with this model (its model card holds no provenance). "
                   "The packet does not substitute the environment it is built in, so the software that trained "
                   "this model is not named here."}]
        dirty = NOT_RECORDED
    blocks.append(table_block(None, [["Python", v["python"]], ["model_core", v["model_core"]],
                                     ["Git commit", cell(v["git_commit"], "mono")],
                                     ["Uncommitted changes at training", dirty]], [0.3, 0.7], kv=True))
    blocks.append({"kind": "h", "text": "Package versions"})
    if v["packages"]:
        blocks.append(table_block(["Package", "Version"], [[k, val] for k, val in v["packages"].items()],
                                  [0.5, 0.5]))
    else:
        blocks.append({"kind": "p", "text": "Package versions: "
                                            + (NOT_RECORDED if v["packages"] is None else "none recorded") + "."})
    return blocks
