"""The packet document and its renderings: content of a promoted and of a rejected candidate, n/a rendering,
and the software versions recorded at training (or "not recorded")."""

from __future__ import annotations

import json
import re

from markupsafe import escape
from packet_inputs import PROVENANCE, ci, critical, make_gate, make_inputs, make_metrics, pdf_strings, read_zip

from regulatory import build_packet, verify_packet
from regulatory.labeling import OUTLINE

OUTLINE_TITLES = [title for _, title in OUTLINE]


def test_passing_packet_content(packets):
    files = read_zip(packets["pass"])
    doc = json.loads(files["packet.json"])
    html = files["packet.html"].decode()
    pdf = pdf_strings(files["packet.pdf"])
    assert doc["packet"]["status"] == "promoted" and doc["gate"]["decision"] == "promote"
    for title in OUTLINE_TITLES:
        assert title in html and title in pdf, title
    for text in ("CC BY-NC-ND 4.0", "Demner-Fushman", "NOT representative", "a" * 64, "b" * 64,
                 "0.667 (0.208–0.939)", "0.021 (0.008–0.037)", "2.13.0+cpu", "4.57.6",
                 "Pediatric", "not intended for autonomous diagnosis"):
        assert text in html, text
    assert "0.667 (0.208" in pdf and "NOT PROMOTED" not in html and "REJECTED" not in pdf
    # The honest pathway: De Novo for the generator, cleared triage devices for the detection-head claims only,
    # with the regulatory team's placeholders carried and flagged.
    assert doc["pathway"]["recommended_pathway"].startswith("De Novo") and doc["pathway"]["generator_predicate"] is None
    assert "De Novo" in pdf and "no substantial-equivalence claim is made for the device as a whole" in html
    assert sorted(set(re.findall(r"\bK\d{6}\b", html))) == ["K183182", "K211733", "K222179", "K230899"]
    claims = {c["finding"]: c["predicates"] for c in doc["pathway"]["claims"]}
    assert claims["Pneumothorax"] == ["K183182", "K211733", "K230899"] and claims["Fracture"] == []
    assert "NOT SUBMISSION-READY" in html and doc["packet"]["predicates_complete"] is False
    assert all("verification" in p["placeholders"] for p in doc["pathway"]["predicates"])
    rows = {r["hazard"]: r for r in doc["risk_analysis"]["rows"]}
    assert rows["Missed pneumothorax in the draft (false negative)"]["residual_risk"] == "acceptable"
    assert rows["Missed pneumothorax in the draft (false negative)"]["linked_checks"] == [
        "critical_sensitivity:Pneumothorax"]
    # IU X-ray demo data: dataset shift cannot be called acceptable, whatever the drift monitor says.
    shift = next(r for r in doc["risk_analysis"]["rows"] if "dataset shift" in r["hazard"])
    assert shift["residual_risk"] == "needs review"


def test_failing_gate_documents_a_rejected_candidate(packets):
    files = read_zip(packets["fail"])
    doc = json.loads(files["packet.json"])
    html = files["packet.html"].decode()
    pdf = pdf_strings(files["packet.pdf"])
    assert doc["packet"]["status"] == "rejected" and doc["gate"]["passed"] is False
    statement = "REJECTED CANDIDATE - NOT PROMOTED"
    assert doc["release_statement"].startswith(statement)
    assert statement in html and statement in pdf and "documents a rejected candidate" in html
    risk = {r["hazard"]: r["residual_risk"] for r in doc["risk_analysis"]["rows"]}
    assert risk["Missed pneumothorax in the draft (false negative)"] == "unacceptable"
    assert risk["Draft asserts a critical finding that is not present (hallucination)"] == "unacceptable"
    assert risk["Excess false-positive critical flags (unnecessary follow-up, alert fatigue)"] == "acceptable"
    assert doc["risk_analysis"]["overall"].startswith("UNACCEPTABLE")
    # every check and number of the gate is in the packet
    for check in doc["gate"]["checks"]:
        assert str(escape(check["name"])) in html and str(escape(check["reason"])) in html
    assert "critical_sensitivity:Pneumothorax" in pdf and "FAIL" in pdf
    assert verify_packet(packets["fail"])["decision"] == "reject"


# --------------------------------------------------------------------------- n/a values

def test_none_values_render_as_na(tmp_path):
    metrics = make_metrics()
    metrics["critical_findings"]["Pneumothorax"] = critical(0, 0, 370, 12, None, (0.95, 0.98))  # no positives
    metrics["critical_findings"]["Fracture"]["sensitivity_ci"] = [None, None]
    metrics["summary"]["CE macro F1"] = ci(None, None, None, 0)
    metrics["summary"]["BLEU-4"] = ci(0.1, None, None)
    metrics["clinical_efficacy"]["per_label"]["Pleural Other"]["f1_ci_low"] = None
    del metrics["clinical_efficacy"]["per_label"]["Support Devices"]
    metrics["calibration"]["temperature"] = float("nan")
    del metrics["latency"], metrics["baseline"]
    gate = make_gate(True)
    gate["checks"][0].update(value=None, ci_low=None)
    path = build_packet(make_inputs(True, metrics=metrics, gate=gate, monitoring=None), tmp_path)
    files = read_zip(path)
    doc = json.loads(files["packet.json"])
    html = files["packet.html"].decode()
    pdf = pdf_strings(files["packet.pdf"])
    ptx = doc["performance"]["critical_findings"]["Pneumothorax"]
    assert ptx["sensitivity"] is None and ptx["sensitivity_ci"] == [None, None]
    assert doc["performance"]["calibration"]["temperature"] is None
    assert doc["performance"]["per_label"]["Support Devices"] is None
    assert re.search(r"<td class=\"tone-strong\">Pneumothorax</td><td>0\.100</td><td>n/a</td>", html)
    assert "0.100 (CI n/a)" in html and "Latency: not reported." in html and "not reported" in html
    assert "n/a" in pdf and "Latency: not reported." in pdf
    risk = {r["hazard"]: r for r in doc["risk_analysis"]["rows"]}
    assert risk["Missed pneumothorax in the draft (false negative)"]["residual_risk"] == "needs review"
    assert "NaN" not in files["packet.json"].decode()


# --------------------------------------------------------------------------- software versions

def test_versions_are_the_provenance_recorded_at_training(packets):
    files = read_zip(packets["pass"])
    versions = json.loads(files["packet.json"])["versions"]
    html = files["packet.html"].decode()
    pdf = pdf_strings(files["packet.pdf"])
    recorded = {k: PROVENANCE[k] for k in ("python", "model_core", "git_commit", "git_dirty")}
    packages = {k: PROVENANCE["packages"][k] for k in sorted(PROVENANCE["packages"], key=str.lower)}
    assert versions == {"recorded": True, **recorded, "packages": packages}
    for text in ("Python", "3.11.9", "model_core", "0.1.0", PROVENANCE["git_commit"], "Uncommitted changes at training",
                 "Package versions", "torch", "2.13.0+cpu", "transformers", "4.57.6", "reportlab", "5.1.0"):
        assert text in html and text in pdf, text
    assert "not recorded" not in html


def test_versions_not_recorded_without_provenance(tmp_path):
    files = read_zip(build_packet(make_inputs(True, versions=None), tmp_path))
    versions = json.loads(files["packet.json"])["versions"]
    html = files["packet.html"].decode()
    pdf = pdf_strings(files["packet.pdf"])
    assert versions == {"recorded": False, "python": "not recorded", "model_core": "not recorded",
                        "git_commit": "not recorded", "git_dirty": None, "packages": None}
    assert "Software versions were not recorded with this model" in html
    section = html[html.index('<section id="section-12">'):html.index('<section id="section-13">')]
    # Python, model_core, git commit, uncommitted changes, packages; plus the banner
    assert section.count("not recorded") == 6, section
    assert pdf.count("not recorded") >= 5 and "3.11.9" not in pdf
