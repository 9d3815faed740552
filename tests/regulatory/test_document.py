"""The 510(k) packet: content, hashes, tamper detection, determinism, n/a rendering, the PHI guard, bad inputs."""

from __future__ import annotations

import copy
import json
import re
import zipfile
from pathlib import Path

import pytest
from markupsafe import escape

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS
from regulatory.packet import (
    PacketInputs,
    PacketVerificationError,
    build_packet,
    load_predicate,
    packet_document,
    verify_packet,
)

CREATED = "2025-11-28T03:24:00Z"
# Strings that must never reach a packet (report text, an identifier, a made-up patient name).
CANARIES = ("FINDINGS: the heart size is normal", "IMPRESSION: no acute", "XXXX", "Jane Canary-Doe", "987-65-4321",
            "pixel_canary_blob")


def ci(value, low=None, high=None, n_boot=1000):
    return {"value": value, "ci_low": low, "ci_high": high, "n_boot": n_boot}


def critical(tp, fn, tn, fp, sens_ci, spec_ci, threshold=0.1):
    pos, neg = tp + fn, tn + fp
    return {"threshold": threshold, "sensitivity": tp / pos if pos else None, "sensitivity_ci": sens_ci,
            "specificity": tn / neg if neg else None, "specificity_ci": spec_ci, "tp": tp, "fn": fn, "tn": tn,
            "fp": fp, "ci_method": "Wilson score", "positives": pos, "negatives": neg,
            "flag_rate": (tp + fp) / (pos + neg)}


def make_metrics() -> dict:
    """A hand-made metrics dict in the shape model_core.evaluation.evaluate_model returns (382 IU test studies)."""
    per_label = {}
    for i, label in enumerate(CHEXPERT_LABELS):
        f1 = round(0.15 + 0.04 * i, 3)
        per_label[label] = {"precision": f1, "recall": f1, "f1": f1, "support": 5 + 7 * i,
                            "f1_ci_low": round(f1 - 0.08, 3), "f1_ci_high": round(f1 + 0.07, 3)}
    hall = {"rate": ci(0.021, 0.008, 0.037), "reports_with_unsupported_critical": 8, "reports": 382,
            "critical_assertions": 41, "unsupported_assertions": 9, "per_assertion_rate": 0.2195,
            "by_finding": {"Pneumothorax": 1, "Fracture": 2, "Lung Lesion": 4, "Pleural Effusion": 2}}
    return {
        "n_studies": 382,
        "bootstrap": {"n_boot": 1000, "seed": 0, "alpha": 0.05, "method": "percentile"},
        "nlg": {"BLEU-4": ci(0.112, 0.098, 0.127)},
        "clinical_efficacy": {"micro": {"f1": ci(0.412, 0.371, 0.455)}, "per_label": per_label},
        "critical_findings": {
            "Pneumothorax": critical(2, 1, 300, 79, (0.208, 0.939), (0.748, 0.829), 0.12),
            "Fracture": critical(9, 2, 260, 111, (0.523, 0.949), (0.653, 0.745), 0.08),
            "Lung Lesion": critical(15, 3, 240, 124, (0.608, 0.942), (0.609, 0.706), 0.10),
            "Pleural Effusion": critical(13, 1, 310, 58, (0.685, 0.987), (0.802, 0.876), 0.15),
        },
        "hallucination": {"vs_ground_truth": hall,
                          "vs_detection_head": {**hall, "rate": ci(0.034, 0.018, 0.052),
                                                "reports_with_unsupported_critical": 13}},
        "calibration": {"temperature": 1.37, "test_ece_uncalibrated": 0.0612, "test_ece": 0.0214},
        "latency": {"num_beams": 4, "threads": 2, "batch_1": {"p50_ms": 412.3, "p95_ms": 530.8, "n": 20},
                    "batch_8_per_report": {"p50_ms": 96.1, "p95_ms": 104.9, "n": 3}},
        "summary": {"BLEU-1": ci(0.402, 0.381, 0.424), "BLEU-4": ci(0.112, 0.098, 0.127),
                    "ROUGE-L": ci(0.331, 0.318, 0.345), "CE micro F1": ci(0.412, 0.371, 0.455),
                    "CE macro F1": ci(0.238, 0.197, 0.281), "hallucination rate": hall["rate"]},
        "baseline": {"BLEU-1": ci(0.311, 0.295, 0.327), "BLEU-4": ci(0.071, 0.062, 0.081),
                     "ROUGE-L": ci(0.287, 0.276, 0.299), "CE micro F1": ci(0.356, 0.318, 0.396),
                     "CE macro F1": ci(0.181, 0.149, 0.214)},
        "generation": {"num_beams": 4},
        "seconds": 812.4,
    }


def make_gate(passed: bool) -> dict:
    """A gate decision; the failing one misses the 0.98 sensitivity target on the CI lower bound."""
    target = 0.98 if not passed else 0.20
    checks = []
    for finding in CRITICAL_FINDINGS:
        low = make_metrics()["critical_findings"][finding]["sensitivity_ci"][0]
        sens = make_metrics()["critical_findings"][finding]["sensitivity"]
        ok = low >= target
        checks.append({"name": f"critical_sensitivity:{finding}", "finding": finding, "metric": "sensitivity",
                       "value": sens, "ci_low": low, "threshold": target, "comparison": ">=", "passed": ok,
                       "reason": f"{finding} sensitivity CI lower bound {low:.3f} "
                                 f"{'>=' if ok else '<'} {target}"})
    checks.append({"name": "hallucination_rate", "finding": None, "metric": "hallucination rate", "value": 0.021,
                   "ci_low": 0.008, "threshold": 0.03 if not passed else 0.05, "comparison": "<",
                   "passed": passed, "reason": "CI upper bound 0.037 vs the maximum"})
    checks.append({"name": "specificity_floor:Pleural Effusion", "finding": "Pleural Effusion",
                   "metric": "specificity", "value": 0.842, "ci_low": 0.802, "threshold": 0.6, "comparison": ">=",
                   "passed": True, "reason": "CI lower bound 0.802 >= 0.6"})
    failed = [c["name"] for c in checks if not c["passed"]]
    return {"passed": not failed, "decision": "reject" if failed else "promote",
            "reasons": [f"{name} failed" for name in failed],
            "checks": checks,
            "config": {"critical_sensitivity_target": target, "hallucination_rate_max": 0.03,
                       "specificity_floor": 0.6, "gate_on_ci_lower_bound": True, "min_positives": 10}}


def make_inputs(passed: bool = True, **overrides) -> PacketInputs:
    fields = dict(
        run_id="run-20251128-0324", model_name="rrg-demo", model_version="0.1.0+544817a", created=CREATED,
        metrics=make_metrics(), gate=make_gate(passed),
        data_summary={"dataset": "IU X-ray (Indiana University Chest X-ray Collection, Open-i), demo subset",
                      "licence": "CC BY-NC-ND 4.0",
                      "citation": "Demner-Fushman D, et al. J Am Med Inform Assoc. 2016;23(2):304-310",
                      "label_source": "MeSH-derived CheXpert labels",
                      "studies_per_split": {"train": 2473, "val": 275, "test": 382},
                      "images_per_split": {"train": 2473, "val": 275, "test": 382},
                      "manifest_sha256": "a" * 64, "image_digest": "sha256:" + "b" * 64, "splits_sha256": "c" * 64},
        versions={"python": "3.11.9", "torch": "2.13.0+cpu", "transformers": "4.57.6", "git_commit": "544817a" * 5
                  + "abcde", "git_dirty": False, "packages": {"reportlab": "5.1.0", "numpy": "1.26.4"}},
        monitoring={"drift": {"method": "MMD (permutation test)", "statistic": 0.0031, "p_value": 0.41,
                              "threshold": 0.05, "drift_detected": False},
                    "phi": {"passed": True, "checks_run": 6, "method": "DICOM header + OCR screen"}},
    )
    fields.update(overrides)
    return PacketInputs(**fields)


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def pdf_strings(pdf: bytes) -> str:
    """The literal text strings of an uncompressed reportlab PDF (enough to search for rendered words)."""
    raw = re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", pdf)
    return " ".join(r.replace(rb"\(", b"(").replace(rb"\)", b")").decode("cp1252") for r in raw)


def rewrite_zip(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Copy a packet, replacing (bytes) or dropping (None) members: a tampered packet."""
    files = read_zip(src)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in files.items():
            if name in change:
                if change[name] is None:
                    continue
                data = change[name]
            zf.writestr(name, data)


@pytest.fixture(scope="module")
def packets(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("packets")
    return {"pass": build_packet(make_inputs(True), out / "pass"),
            "fail": build_packet(make_inputs(False), out / "fail")}


# --------------------------------------------------------------------------- content and hashes

def test_packet_has_its_four_files_and_verifies(packets):
    path = packets["pass"]
    assert path.name == "510k_packet_rrg-demo_v0.1.0+544817a.zip"
    files = read_zip(path)
    assert set(files) == {"packet.pdf", "packet.html", "packet.json", "SHA256SUMS"}
    assert files["packet.pdf"].startswith(b"%PDF")
    result = verify_packet(path)
    assert result["ok"] and result["decision"] == "promote" and result["model_version"] == "0.1.0+544817a"
    import hashlib
    for line in files["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256(files[name]).hexdigest() == digest == result["files"][name]
    assert list(path.parent.iterdir()) == [path]  # no temporary leftovers


def test_passing_packet_content(packets):
    files = read_zip(packets["pass"])
    doc = json.loads(files["packet.json"])
    html = files["packet.html"].decode()
    pdf = pdf_strings(files["packet.pdf"])
    assert doc["packet"]["status"] == "promoted" and doc["gate"]["decision"] == "promote"
    for title in ("Device description and intended use", "Indications for use and contraindications",
                  "Predicate device comparison", "Training, validation and test data", "Clinical performance",
                  "Release-gate decision", "Risk analysis", "Software and model versions", "Release status"):
        assert title in html and title in pdf
    for text in ("CC BY-NC-ND 4.0", "Demner-Fushman", "NOT representative", "a" * 64, "b" * 64,
                 "0.667 (0.208–0.939)", "0.021 (0.008–0.037)", "2.13.0+cpu", "4.57.6",
                 "Pediatric", "not intended for autonomous diagnosis"):
        assert text in html, text
    assert "0.667 (0.208" in pdf and "NOT PROMOTED" not in html and "REJECTED" not in pdf
    # Predicate placeholders are carried, flagged, never replaced by an invented K-number.
    assert doc["predicate"]["placeholders"] and "k_number" in doc["predicate"]["placeholders"]
    assert "NOT SUBMISSION-READY" in html and not re.search(r"\bK\d{6}\b", html)
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


def test_risk_levels_follow_the_linked_gate_checks():
    gate = make_gate(True)
    gate["checks"] += [
        {"name": "min_positives:Pneumothorax", "finding": "Pneumothorax", "metric": "positives", "value": 3,
         "ci_low": None, "threshold": 10, "comparison": ">=", "passed": False, "reason": "3 test positives < 10"},
        {"name": "phi_scan", "finding": None, "metric": "phi findings", "value": 0, "ci_low": None, "threshold": 1,
         "comparison": "<", "passed": True, "reason": "no identifiers found"},
        {"name": "graphics_smoke", "finding": None, "metric": "graphic", "value": 1, "ci_low": None,
         "threshold": 0, "comparison": ">", "passed": True, "reason": "unrelated check"},
    ]
    gate.update(passed=False, decision="reject", reasons=["min_positives:Pneumothorax failed"])
    doc = packet_document(make_inputs(False, gate=gate, monitoring=None))
    rows = {r["hazard"].split(" (")[0]: r for r in doc["risk_analysis"]["rows"]}
    ptx = rows["Missed pneumothorax in the draft"]
    assert ptx["residual_risk"] == "unacceptable"
    assert ptx["linked_checks"] == ["critical_sensitivity:Pneumothorax", "min_positives:Pneumothorax"]
    assert rows["Missed fracture in the draft"]["residual_risk"] == "acceptable"
    phi = next(r for r in doc["risk_analysis"]["rows"] if r["hazard"].startswith("Protected health"))
    assert phi["linked_checks"] == ["phi_scan"] and phi["residual_risk"] == "acceptable"
    laterality = next(r for r in doc["risk_analysis"]["rows"] if r["hazard"].startswith("Wrong laterality"))
    assert laterality["residual_risk"] == "needs review" and "0.034" in laterality["measured"]
    assert doc["risk_analysis"]["overall"].startswith("UNACCEPTABLE")


# --------------------------------------------------------------------------- tampering

@pytest.mark.parametrize("member", ["packet.html", "packet.pdf", "packet.json"])
def test_tampered_file_is_named(packets, tmp_path, member):
    files = read_zip(packets["pass"])
    tampered = tmp_path / "tampered.zip"
    rewrite_zip(packets["pass"], tampered, {member: files[member].replace(b"0.667", b"0.967", 1) + b" "})
    with pytest.raises(PacketVerificationError, match=re.escape(member) + ": sha256 mismatch"):
        verify_packet(tampered)


def test_missing_and_extra_files_are_named(packets, tmp_path):
    missing = tmp_path / "missing.zip"
    rewrite_zip(packets["pass"], missing, {"packet.pdf": None})
    with pytest.raises(PacketVerificationError, match=r"packet\.pdf: missing from the archive"):
        verify_packet(missing)
    extra = tmp_path / "extra.zip"
    rewrite_zip(packets["pass"], extra, {})
    with zipfile.ZipFile(extra, "a") as zf:
        zf.writestr("notes.txt", b"added later")
    with pytest.raises(PacketVerificationError, match=r"notes\.txt: in the archive but not listed"):
        verify_packet(extra)
    no_sums = tmp_path / "nosums.zip"
    rewrite_zip(packets["pass"], no_sums, {"SHA256SUMS": None})
    with pytest.raises(PacketVerificationError, match="SHA256SUMS: missing"):
        verify_packet(no_sums)
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"hello")
    with pytest.raises(PacketVerificationError, match="not a zip"):
        verify_packet(not_zip)


# --------------------------------------------------------------------------- determinism and atomicity

def test_same_inputs_give_byte_identical_packets(packets, tmp_path):
    again = build_packet(make_inputs(True), tmp_path)
    first, second = read_zip(packets["pass"]), read_zip(again)
    assert first["SHA256SUMS"] == second["SHA256SUMS"]
    assert first == second
    assert packets["pass"].read_bytes() == again.read_bytes()
    # and the content depends on the inputs (the timestamp is an input, not the clock)
    later = read_zip(build_packet(make_inputs(True, created="2025-11-29T00:00:00+00:00"), tmp_path / "later"))
    assert later["packet.json"] != first["packet.json"] and later["packet.pdf"] != first["packet.pdf"]


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    import regulatory.packet as packet

    def broken(doc):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(packet, "render_pdf", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        build_packet(make_inputs(True), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    monkeypatch.undo()
    target = build_packet(make_inputs(True), tmp_path / "out")

    def failing_verify(path):
        raise PacketVerificationError("simulated")

    before = target.read_bytes()
    monkeypatch.setattr(packet, "verify_packet", failing_verify)
    with pytest.raises(PacketVerificationError):
        build_packet(make_inputs(False), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [target.name]  # old packet intact, no temp dir
    assert target.read_bytes() == before


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


# --------------------------------------------------------------------------- PHI guard

def test_report_text_and_pixels_are_never_rendered(tmp_path):
    metrics = make_metrics()
    metrics["predictions"] = [{"study_id": "s1", "generated": CANARIES[0], "reference": CANARIES[1] + " XXXX"}]
    metrics["pixels"] = [[0.1, 0.2], [0.3, 0.4]]
    metrics["example_report"] = f"{CANARIES[0]}. {CANARIES[1]}. Patient {CANARIES[3]}, SSN {CANARIES[4]}"
    metrics["summary"]["BLEU-4"]["example"] = CANARIES[1]
    metrics["critical_findings"]["Pneumothorax"]["worst_case_report"] = CANARIES[0]
    metrics["clinical_efficacy"]["per_label"][CANARIES[3]] = {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                             "support": 1}
    metrics["clinical_efficacy"]["per_label"]["Edema"]["note"] = CANARIES[3]
    metrics["hallucination"]["vs_ground_truth"]["examples"] = [CANARIES[0]]
    metrics["hallucination"]["definition"] = CANARIES[1]
    gate = make_gate(False)
    gate["config"]["examples"] = {"report": CANARIES[0]}  # nested config is not rendered
    data = dict(make_inputs().data_summary, sample_image=CANARIES[5], sample_report=CANARIES[0])
    versions = dict(make_inputs().versions, hostname=CANARIES[3])
    path = build_packet(make_inputs(False, metrics=metrics, gate=gate, data_summary=data, versions=versions),
                        tmp_path)
    files = read_zip(path)
    for name, content in files.items():
        text = content.decode("utf-8", errors="replace") if name != "packet.pdf" else pdf_strings(content)
        for canary in CANARIES:
            assert canary not in text, f"{canary!r} leaked into {name}"
    doc = json.loads(files["packet.json"])
    assert "predictions" not in json.dumps(doc) and "pixels" not in doc["performance"]


@pytest.mark.parametrize("where, value", [
    ("reason", "FINDINGS: small left pneumothorax. IMPRESSION: pneumothorax"),
    ("reason", "missed in study of patient MRN 12345"),
    ("reason", "XXXX year old with chest pain"),
    ("dataset", "IU X-ray " + "x" * 400),
])
def test_report_like_text_in_rendered_fields_is_refused(where, value):
    gate, data = make_gate(False), dict(make_inputs().data_summary)
    if where == "reason":
        gate["checks"][0]["reason"] = value
    else:
        data["dataset"] = value
    with pytest.raises(ValueError, match=r"gate\['checks'\]\[0\]\['reason'\]|data_summary\['dataset'\]"):
        packet_document(make_inputs(False, gate=gate, data_summary=data))


# --------------------------------------------------------------------------- bad inputs

def _without(d: dict, *path):
    d = copy.deepcopy(d)
    node = d
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return d


@pytest.mark.parametrize("path, message", [
    (("summary", "BLEU-4"), r"metrics\['summary'\]\['BLEU-4'\] is missing"),
    (("summary",), r"metrics\['summary'\] is missing"),
    (("critical_findings", "Pneumothorax"), r"metrics\['critical_findings'\]\['Pneumothorax'\] is missing"),
    (("critical_findings", "Fracture", "sensitivity_ci"), r"\['Fracture'\]\['sensitivity_ci'\] is missing"),
    (("hallucination", "vs_ground_truth", "rate"), r"\['vs_ground_truth'\]\['rate'\] is missing"),
    (("clinical_efficacy", "per_label", "Edema", "f1"), r"\['per_label'\]\['Edema'\]\['f1'\] is missing"),
    (("n_studies",), r"metrics\['n_studies'\] is missing"),
])
def test_missing_metric_keys_are_named(path, message):
    with pytest.raises(ValueError, match=message):
        packet_document(make_inputs(metrics=_without(make_metrics(), *path)))


def test_wrong_types_are_named():
    metrics = make_metrics()
    metrics["summary"]["ROUGE-L"]["value"] = "0.33"
    with pytest.raises(ValueError, match=r"metrics\['summary'\]\['ROUGE-L'\]\['value'\] must be a number"):
        packet_document(make_inputs(metrics=metrics))
    metrics = make_metrics()
    metrics["critical_findings"]["Lung Lesion"]["sensitivity"] = 83.3  # a percentage
    with pytest.raises(ValueError, match=r"\['Lung Lesion'\]\['sensitivity'\] = 83.3 is outside \[0, 1\]"):
        packet_document(make_inputs(metrics=metrics))
    metrics = make_metrics()
    metrics["critical_findings"]["Fracture"]["tp"] = 9.5
    with pytest.raises(ValueError, match=r"\['Fracture'\]\['tp'\] must be an integer"):
        packet_document(make_inputs(metrics=metrics))
    with pytest.raises(ValueError, match=r"metrics must be a dict"):
        packet_document(make_inputs(metrics=[1, 2]))
    gate = make_gate(True)
    gate["decision"] = "maybe"
    with pytest.raises(ValueError, match=r"gate\['decision'\]"):
        packet_document(make_inputs(gate=gate))
    gate = make_gate(False)
    gate["passed"] = True
    with pytest.raises(ValueError, match=r"gate\['passed'\] = True contradicts"):
        packet_document(make_inputs(gate=gate))
    gate = make_gate(True)
    gate["checks"][1]["comparison"] = "=="
    with pytest.raises(ValueError, match=r"gate\['checks'\]\[1\]\['comparison'\]"):
        packet_document(make_inputs(gate=gate))
    data = dict(make_inputs().data_summary, manifest_sha256="abc")
    with pytest.raises(ValueError, match=r"data_summary\['manifest_sha256'\]"):
        packet_document(make_inputs(data_summary=data))
    with pytest.raises(ValueError, match=r"versions\['torch'\] is missing"):
        packet_document(make_inputs(versions={"python": "3.11", "transformers": "4", "git_commit": "x"}))
    with pytest.raises(ValueError, match="model_name"):
        packet_document(make_inputs(model_name="../evil"))
    with pytest.raises(ValueError, match="timezone"):
        packet_document(make_inputs(created="2025-11-28T03:24:00"))


# --------------------------------------------------------------------------- predicate

def test_predicate_config_has_placeholders_and_no_invented_k_number(tmp_path):
    predicate = load_predicate()
    assert "<<FILL" in predicate["k_number"] and not re.search(r"K\d{6}", predicate["k_number"])
    filled = dict(predicate, **{k: "Example" for k in ("device_name", "manufacturer", "decision_date",
                                                       "regulation_number", "product_code", "performance")},
                  k_number="K000000")  # obviously fake, for the test only
    doc = packet_document(make_inputs(predicate=filled))
    assert doc["predicate"]["placeholders"] == [] and doc["packet"]["predicate_complete"] is True
    with pytest.raises(ValueError, match="k_number.*never guess"):
        packet_document(make_inputs(predicate=dict(predicate, k_number="K12")))
    bad = tmp_path / "predicate.yaml"
    bad.write_text("device: {}\n")
    with pytest.raises(ValueError, match="no top-level 'predicate'"):
        load_predicate(bad)
