"""What the packet lets in: the PHI guard (report text and identifiers refused, never echoed), bad inputs named
by their key, values with a format of their own (K-number, commit, timestamp), the predicate entries, the SBOM."""

from __future__ import annotations

import copy
import json

import pytest
from packet_inputs import CANARIES, PROVENANCE, make_gate, make_inputs, make_metrics, pdf_strings, read_zip

from regulatory import build_packet, load_predicates, packet_document

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


@pytest.mark.parametrize("value, problem", [
    ("Impression: no acute cardiopulmonary process.", "a radiology report section header"),
    ("No pneumothorax. FINDINGS: small left effusion", "a radiology report section header"),
    ("missed in the study of MRN 98765", "a record, accession or patient number"),
    ("reviewed with Dr. Canary before release", "a person's name after a title"),
    ("XXXX year old with chest pain", "de-identification mask 'XXXX'"),
    ("questions: call (212) 555-0199", "a phone number"),
    ("SSN 987-65-4321 in the log", "a social-security-number-shaped number"),
])
def test_refusal_names_the_field_and_the_problem_never_the_value(value, problem):
    gate = make_gate(False)
    gate["checks"][0]["reason"] = value
    with pytest.raises(ValueError) as err:
        packet_document(make_inputs(False, gate=gate))
    message = str(err.value)
    assert message.startswith("gate['checks'][0]['reason'] looks like it contains") and problem in message
    assert value not in message
    for fragment in ("no acute", "small left", "98765", "Canary", "year old", "0199", "4321"):
        assert fragment not in message


@pytest.mark.parametrize("field", ["dataset", "citation", "gate config", "gate reasons", "check name", "predicate",
                                   "monitoring", "intended_use", "warnings", "sbom licence"])
def test_every_free_text_field_is_screened(field):
    value = "call Mr. Canary at (212) 555-0199"
    gate, data, predicates = make_gate(False), dict(make_inputs().data_summary), load_predicates()
    monitoring, overrides = copy.deepcopy(make_inputs().monitoring), {}
    sbom = copy.deepcopy(make_inputs().sbom)
    where = {"dataset": "data_summary['dataset']", "citation": "data_summary['citation']",
             "gate config": "gate['config']['note']", "gate reasons": "gate['reasons'][0]",
             "check name": "gate['checks'][1]['name']", "predicate": "predicates[1]['manufacturer']",
             "monitoring": "monitoring['drift']['method']", "intended_use": "intended_use",
             "warnings": "warnings[1]", "sbom licence": "sbom['components'][5]['licenses'][0]['license']['name']",
             }[field]
    if field in ("dataset", "citation"):
        data[field] = value
    elif field == "gate config":
        gate["config"]["note"] = value
    elif field == "gate reasons":
        gate["reasons"][0] = value
    elif field == "check name":
        gate["checks"][1]["name"] = value
    elif field == "predicate":
        predicates[1]["manufacturer"] = value
    elif field == "sbom licence":
        sbom["components"][5]["licenses"][0]["license"]["name"] = value
    elif field == "monitoring":
        monitoring["drift"]["method"] = value
    elif field == "intended_use":
        overrides["intended_use"] = value
    else:
        overrides["warnings"] = ("Read the images.", value)
    with pytest.raises(ValueError) as err:
        packet_document(make_inputs(False, gate=gate, data_summary=data, predicates=predicates, monitoring=monitoring,
                                    sbom=sbom, **overrides))
    message = str(err.value)
    assert message.startswith(f"{where} looks like it contains") and "Canary" not in message and "0199" not in message


def test_a_config_key_is_screened_before_it_is_named():
    gate = make_gate(True)
    gate["config"]["MRN 98765"] = 1
    with pytest.raises(ValueError, match=r"a key of gate\['config'\] looks like it contains") as err:
        packet_document(make_inputs(gate=gate))
    assert "98765" not in str(err.value)


def test_formatted_values_are_checked_by_their_own_format():
    """K-numbers, dates, run ids, commits and versions hold digit runs and dates that the identifier screen
    refuses in free text: each is let in by its own strict format instead."""
    predicates = load_predicates()
    predicates[1].update(k_number="K183182", decision_date="2019-05-01")
    versions = copy.deepcopy(PROVENANCE)
    versions["packages"]["certifi"] = "2024.2.2"  # calendar versioning looks like a date
    doc = packet_document(make_inputs(predicates=predicates, versions=versions, run_id="run-20251128-0324",
                                      created="2025-11-28T03:24:00+00:00"))
    cited = doc["pathway"]["predicates"][1]
    assert cited["k_number"] == "K183182" and cited["decision_date"] == "2019-05-01"
    assert doc["versions"]["packages"]["certifi"] == "2024.2.2" and doc["packet"]["created"] == "2025-11-28T03:24:00Z"
    assert doc["versions"]["git_commit"] == PROVENANCE["git_commit"] and doc["packet"]["run_id"] == "run-20251128-0324"
    # the same values in free text are refused
    gate = make_gate(True)
    gate["checks"][0]["reason"] = "compare K183182 of 2019-05-01"
    with pytest.raises(ValueError, match=r"\['reason'\] looks like it contains a run of 6 or more digits.*a full "
                                         r"calendar date"):
        packet_document(make_inputs(gate=gate))
    # and a value out of its format is refused without being echoed
    for bad, match in ((dict(versions, git_commit="Jane Canary-Doe"), r"versions\['git_commit'\] is neither"),
                       (dict(versions, python="Jane Canary-Doe"), r"versions\['python'\] is not a version"),
                       (dict(versions, packages={"torch": "Jane Canary-Doe"}),
                        r"versions\['packages'\]\['torch'\] is neither"),
                       (dict(versions, packages={"Jane Canary-Doe": "1.0"}), r"a key of versions\['packages'\]")):
        with pytest.raises(ValueError, match=match) as err:
            packet_document(make_inputs(versions=bad))
        assert "Canary" not in str(err.value)
    for kwargs in ({"run_id": "MRN 98765"}, {"created": "born 1950-02-01"},
                   {"predicates": [dict(predicates[0], k_number="K98765")]}):
        with pytest.raises(ValueError) as err:
            packet_document(make_inputs(**kwargs))
        assert "98765" not in str(err.value) and "1950" not in str(err.value)


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
    with pytest.raises(ValueError, match=r"versions\['python'\] is missing"):
        packet_document(make_inputs(versions={"model_core": "0.1.0", "git_commit": "unknown"}))
    with pytest.raises(ValueError, match="model_name") as err:
        packet_document(make_inputs(model_name="../evil"))
    assert "evil" not in str(err.value)
    with pytest.raises(ValueError, match="timezone"):
        packet_document(make_inputs(created="2025-11-28T03:24:00"))


# --------------------------------------------------------------------------- predicates

def test_predicate_config_cites_cleared_triage_devices_with_placeholders_marked(tmp_path):
    predicates = load_predicates()
    assert [p["k_number"] for p in predicates] == ["K183182", "K211733", "K230899", "K222179"]
    for p in predicates:
        assert set(p["claims"]) <= {"Pneumothorax", "Pleural Effusion"}  # triage predicates: detection claims only
        assert "<<FILL" in p["verification"] and "<<FILL" in p["performance"]  # the regulatory team completes
    filled = [dict(p, **{k: "Example" for k in ("manufacturer", "product_code", "performance", "verification")})
              for p in predicates]
    doc = packet_document(make_inputs(predicates=filled))
    assert doc["pathway"]["complete"] is True and doc["packet"]["predicates_complete"] is True
    assert all(p["placeholders"] == [] for p in doc["pathway"]["predicates"])
    with pytest.raises(ValueError, match=r"predicates\[0\]\['k_number'\].*never guess"):
        packet_document(make_inputs(predicates=[dict(predicates[0], k_number="K12")]))
    with pytest.raises(ValueError, match=r"predicates\[0\]\['claims'\]\[0\] is not one of the critical findings"):
        packet_document(make_inputs(predicates=[dict(predicates[0], claims=["Cardiomegaly"])]))
    with pytest.raises(ValueError, match=r"predicates\[0\]\['verification'\] is missing"):
        packet_document(make_inputs(predicates=[{k: v for k, v in predicates[0].items() if k != "verification"}]))
    bad = tmp_path / "predicate.yaml"
    bad.write_text("predicate: {}\n")
    with pytest.raises(ValueError, match="no top-level 'predicates' list"):
        load_predicates(bad)
