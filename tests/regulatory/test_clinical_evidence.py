"""The packet's clinical-evidence sections: error analysis and bias audit rendered from the aggregates, their charts
embedded (never the example images), "not run" / "missing" said rather than passed over, the PCCP and eSTAR
following the evidence, and the drift row citing the monitor's own figures."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from packet_inputs import (
    CANARIES,
    EVIDENCE_FIGURE_NAMES,
    chart_png,
    make_bias_audit,
    make_error_summary,
    make_inputs,
    pdf_strings,
    read_zip,
)

from model_core.artifacts import (
    BIAS_AUDIT,
    DRIFT_CHECK,
    ERROR_SUMMARY,
    EVIDENCE_BIAS_DIR,
    EVIDENCE_ERRORS_DIR,
    EXAMPLES_PLOT,
)
from regulatory import build_packet, packet_document
from regulatory.assemble import read_evidence


def _criterion(doc: dict) -> dict:
    return next(c for c in doc["pccp"]["verdict"]["criteria"] if c["criterion"].startswith("Clinical evidence"))


def _estar(doc: dict) -> dict:
    return {r["section"]: r for r in doc["estar"]}


def test_the_sections_render_the_aggregates_and_embed_the_charts(packets):
    files = read_zip(packets["pass"])
    doc = json.loads(files["packet.json"])
    html, pdf = files["packet.html"].decode(), pdf_strings(files["packet.pdf"])
    errors, bias = doc["error_analysis"], doc["bias_audit"]
    assert errors["status"] == bias["status"] == "included"
    assert errors["study_error_rate"] == {"value": 0.537, "ci_low": 0.487, "ci_high": 0.586, "n_boot": 1000}
    assert errors["confusion_critical"]["Pneumothorax"] == {"tp": 5, "fn": 7, "fp": 3, "tn": 367}
    assert bias["attributes"]["sex"]["groups"]["F"]["findings"]["Fracture"]["sensitivity"] == 1.0
    assert bias["attributes"]["age band"]["fairness"]["Fracture"]["equalized_odds_difference"] == \
        "too few to estimate"
    for text in ("Error analysis", "Bias audit: performance by subgroup", "missed finding", "0.537 (0.487–0.586)",
                 "Confusion per critical finding", "Error rate vs finding prevalence", "Errors vs image quality",
                 "too few to estimate", "Demographic-parity difference", "0.080 (0.020–0.150)",
                 "No estimable subgroup falls below"):
        assert text in html, text
    for text in ("Error analysis", "Confusion per critical finding", "too few to estimate", "Equalized-odds"):
        assert text in pdf, text
    # each chart: a zip member listed in SHA256SUMS, its hash in packet.json, embedded in the HTML and the PDF
    listed = {f["file"]: f["sha256"] for f in errors["figures"] + bias["figures"]}
    assert set(listed) == set(EVIDENCE_FIGURE_NAMES)
    for name, digest in listed.items():
        assert hashlib.sha256(files[name]).hexdigest() == digest
    assert html.count('src="data:image/png;base64,') == 4
    assert files["packet.pdf"].count(b"/Subtype /Image") == 4
    assert EXAMPLES_PLOT not in html and "study_id" not in files["packet.json"].decode()
    assert "never enter this packet" in html
    rows = _estar(doc)
    assert rows["Performance testing - failure modes (error analysis)"]["status"] == "included"
    assert rows["Performance testing - subgroups (bias audit)"]["detail"].startswith("Section 8")
    assert _criterion(doc)["status"] == "met"


def test_without_clinical_evidence_every_place_says_not_run(tmp_path):
    files = read_zip(build_packet(make_inputs(True, error_summary=None, bias_audit=None, figures=None), tmp_path))
    doc = json.loads(files["packet.json"])
    html = files["packet.html"].decode()
    assert doc["error_analysis"]["status"] == doc["bias_audit"]["status"] == "not run"
    assert "Error analysis: NOT RUN" in html and "Bias audit: NOT RUN" in html
    assert "NOT RUN" in pdf_strings(files["packet.pdf"])
    assert _criterion(doc)["status"] == "not verifiable" and not doc["pccp"]["verdict"]["within"]
    row = _estar(doc)["Performance testing - failure modes (error analysis)"]
    assert row["status"] == "to be completed" and "not run" in row["detail"]
    assert not any(name.endswith(".png") for name in files)
    gmlp = {int(r["principle"].split(".")[0]): r["evidence"] for r in doc["gmlp"]}
    assert "no error analysis: not run" in gmlp[8] and "bias audit not run" in gmlp[3]


def _evidence_dir(tmp_path, inputs):
    """A clinical_evidence output directory as the pipeline step writes it (aggregates, charts, drift check)."""
    root = tmp_path / "evidence"
    (root / EVIDENCE_ERRORS_DIR).mkdir(parents=True)
    (root / EVIDENCE_BIAS_DIR).mkdir()
    (root / EVIDENCE_ERRORS_DIR / ERROR_SUMMARY).write_text(json.dumps(inputs.error_summary))
    (root / EVIDENCE_BIAS_DIR / BIAS_AUDIT).write_text(json.dumps(inputs.bias_audit))
    for name, data in inputs.figures.items():
        (root / (EVIDENCE_BIAS_DIR if name.startswith("bias") else EVIDENCE_ERRORS_DIR) / name).write_bytes(data)
    (root / EVIDENCE_ERRORS_DIR / EXAMPLES_PLOT).write_bytes(chart_png("#000000"))   # written, never read
    (root / DRIFT_CHECK).write_text(json.dumps({
        "method": "MMD² permutation test", "statistic": 0.00042, "p_value": 0.613, "threshold": 0.0031, "alpha": 0.01,
        "drift_detected": False, "status": "ok", "window": 191, "n_reference": 191, "permutations": 1000,
        "seconds": 0.4, "design": "in-distribution check: held-out reference split in two"}))
    return root


def test_a_missing_evidence_file_is_named_and_does_not_count(tmp_path):
    root = _evidence_dir(tmp_path, make_inputs(True))
    fields = read_evidence(root)
    assert fields["evidence_missing"] == [] and EXAMPLES_PLOT not in fields["figures"]
    assert fields["monitoring"]["drift"]["window"] == 191
    (root / EVIDENCE_BIAS_DIR / BIAS_AUDIT).unlink()
    shutil.rmtree(root / EVIDENCE_ERRORS_DIR)
    fields = read_evidence(root)
    assert set(fields["evidence_missing"]) == {BIAS_AUDIT, ERROR_SUMMARY, "error_confusion_critical.png",
                                               "error_rate_vs_prevalence.png", "error_vs_image_quality.png"}
    doc = packet_document(make_inputs(True, error_summary=None, bias_audit=None, **{
        k: v for k, v in fields.items() if k != "monitoring"}))
    assert doc["bias_audit"]["status"] == "missing" and doc["bias_audit"]["missing"] == [BIAS_AUDIT]
    assert doc["error_analysis"]["status"] == "missing"
    assert _criterion(doc)["status"] == "not verifiable" and BIAS_AUDIT in _criterion(doc)["evidence"]
    assert "missing from the run: bias_audit.json" in _estar(doc)["Performance testing - subgroups (bias audit)"][
        "detail"]
    assert read_evidence(None) == {}


def test_the_drift_row_cites_the_monitors_figures(tmp_path):
    drift = read_evidence(_evidence_dir(tmp_path, make_inputs(True)))["monitoring"]
    doc = packet_document(make_inputs(True, monitoring=drift))
    row = next(r for r in doc["risk_analysis"]["rows"] if "dataset shift" in r["hazard"])
    assert "statistic 0.00042, p = 0.613, threshold 0.00310 (alpha 0.010), drift detected: no" in row["measured"]
    assert "window 191, reference 191 studies, 1000 permutations" in row["measured"]
    insufficient = {"drift": {**drift["drift"], "drift_detected": None, "status": "insufficient data",
                              "p_value": None, "statistic": None, "threshold": None, "window": 12}}
    row = next(r for r in packet_document(make_inputs(True, monitoring=insufficient))["risk_analysis"]["rows"]
               if "dataset shift" in r["hazard"])
    assert row["residual_risk"] == "needs review" and "insufficient data" in row["basis"]


def test_a_flagged_subgroup_puts_the_version_outside_the_pccp():
    doc = packet_document(make_inputs(True, bias_audit=make_bias_audit(flagged=True)))
    assert _criterion(doc)["status"] == "not met" and "Fracture in sex = F" in _criterion(doc)["evidence"]
    assert len(doc["bias_audit"]["flagged"]) == 2


@pytest.mark.parametrize("figures, message", [
    ({EXAMPLES_PLOT: chart_png()}, r"figures\['error_examples\.png'\] must not enter the packet: it shows patient"),
    ({"portrait.png": chart_png()}, r"figures has an unknown figure"),
    ({"error_confusion_critical.png": b"GIF89a not a png"}, r"is not a readable PNG image"),
])
def test_patient_images_and_unknown_figures_are_refused(figures, message):
    with pytest.raises(ValueError, match=message):
        packet_document(make_inputs(True, figures=figures))


def test_text_from_the_evidence_is_screened_without_echoing_it():
    summary = make_error_summary()
    summary["truth"] = CANARIES[0]
    with pytest.raises(ValueError, match=r"error_summary\.json\['truth'\] looks like it contains") as exc:
        packet_document(make_inputs(True, error_summary=summary))
    audit = make_bias_audit()
    audit["attributes"]["sex"]["groups"]["MRN: 12345678"] = audit["attributes"]["sex"]["groups"].pop("M")
    with pytest.raises(ValueError, match="a subgroup name of bias_audit.json") as exc2:
        packet_document(make_inputs(True, bias_audit=audit))
    assert CANARIES[0] not in str(exc.value) and "12345678" not in str(exc2.value)
