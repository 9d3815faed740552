"""View blocks of the packet's regulatory-evidence sections: pathway and predicates, PCCP, comparison with the
champion, model file hashes, SBOM and licences, the eSTAR-style manifest and the GMLP mapping."""

from __future__ import annotations

from regulatory.formatting import fmt
from regulatory.view_blocks import cell, table_block

DEV_KEY_WARNING = ("Signed with a DEVELOPMENT key (generated locally because no signing key was configured): the "
                   "signature shows the files are unchanged since packaging, but it is not evidence for a release. "
                   "Configure RRG_SIGNING_KEY or RRG_SIGNING_KEY_FILE.")
_STATUS_TONE = {"met": "good", "not met": "bad", "not verifiable": "warn", "included": "good", "partial": "warn",
                "to be completed": "warn", "not applicable": None, "evidence in this packet": "good", "gap": "bad"}


def pathway_blocks(doc: dict) -> list[dict]:
    pw = doc["pathway"]
    head = pw["detection_head"]
    blocks = [{"kind": "banner", "tone": "warn", "text": f"Recommended pathway: {pw['recommended_pathway']}."},
              {"kind": "p", "text": pw["statement"]},
              {"kind": "h", "text": "Detection-head claims and their predicates"},
              {"kind": "p", "text": pw["detection_statement"]},
              table_block(["Critical finding (detection head)", "Predicates cited (K-number)", "Status"],
                          [[cell(c["finding"], "strong"), ", ".join(c["predicates"]) or "none",
                            cell(c["status"], None if c["predicates"] else "warn")] for c in pw["claims"]],
                          [0.26, 0.3, 0.44])]
    if not pw["complete"]:
        blocks.append({"kind": "banner", "tone": "warn", "text":
                       "Fields marked <<FILL ...>> are placeholders the regulatory team completes from each "
                       "predicate's 510(k) summary and clearance letter; every entry must be verified against the "
                       "FDA 510(k) database before submission."})
    for q in pw["predicates"]:
        ident = [f"{label}: {q[key]}" for key, label in (
            ("manufacturer", "Manufacturer"), ("decision_date", "Decision date"), ("regulation_number", "Regulation"),
            ("product_code", "Product code"), ("device_class", "Class")) if key in q]
        blocks += [{"kind": "h", "text": f"{q['device_name']} ({q['k_number']})"},
                   table_block(["Attribute", "Subject device (detection head)", "Predicate device"], [
                       [cell("Identification", "strong"), f"{doc['packet']['model_name']} "
                        f"v{doc['packet']['model_version']}", ". ".join(ident)],
                       [cell("Claims cited for", "strong"), ", ".join(q["claims"]), q["cleared_for"]],
                       [cell("Intended use", "strong"), head["intended_use"], q["intended_use"]],
                       [cell("Output", "strong"), head["output"], q["output"]],
                       [cell("Performance", "strong"), _claims_performance(doc, q["claims"]), q["performance"]],
                       [cell("Verification", "strong"), "-", cell(q["verification"],
                                                                   "warn" if "verification" in q["placeholders"]
                                                                   else None)],
                   ], [0.16, 0.42, 0.42])]
    return blocks


def _claims_performance(doc: dict, claims: list[str]) -> str:
    crit = doc["performance"]["critical_findings"]
    return "; ".join(f"{f}: sensitivity {fmt(crit[f]['sensitivity'])} (CI low {fmt(crit[f]['sensitivity_ci'][0])}), "
                     f"specificity {fmt(crit[f]['specificity'])}" for f in claims)


def pccp_blocks(pccp: dict) -> list[dict]:
    verdict = pccp["verdict"]
    blocks = [{"kind": "banner", "tone": "good" if verdict["within"] else "bad",
               "text": f"This version is {verdict['statement']}"},
              table_block(["Criterion", "Status", "Evidence"],
                          [[cell(c["criterion"], "strong"), cell(c["status"].upper(), _STATUS_TONE[c["status"]]),
                            c["evidence"]] for c in verdict["criteria"]], [0.3, 0.14, 0.56]),
              {"kind": "note", "text": "Computed from this packet's gate decision, labeling and data lineage; the "
                                       "determination is confirmed by Regulatory Affairs."},
              {"kind": "h", "text": "Description of modifications: what may change"},
              {"kind": "list", "items": pccp["modifications"]},
              {"kind": "h", "text": "What may not change"},
              {"kind": "list", "items": pccp["not_changed"]},
              {"kind": "h", "text": "Modification protocol"},
              table_block(["Component", "Procedure"], [[cell(p["component"], "strong"), p["text"]]
                                                       for p in pccp["protocol"]], [0.24, 0.76]),
              {"kind": "h", "text": "Acceptance criteria (limits the release gate may not loosen)"},
              table_block(["Gate setting", "PCCP limit"], [[k, f"{v['comparison']} {v['limit']}"]
                                                           for k, v in pccp["acceptance_limits"].items()],
                          [0.5, 0.5]),
              {"kind": "h", "text": "Impact assessment"},
              table_block(["Modification", "Benefit", "Risk", "Risk control"],
                          [[cell(r["modification"], "strong"), r["benefit"], r["risk"], r["mitigation"]]
                           for r in pccp["impact"]], [0.2, 0.22, 0.26, 0.32]),
              {"kind": "h", "text": "Traceability"},
              table_block(["Modification", "Protocol component", "Acceptance criterion", "Evidence"],
                          [[cell(r["modification"], "strong"), r["protocol"], r["acceptance"], r["evidence"]]
                           for r in pccp["traceability"]], [0.18, 0.24, 0.24, 0.34])]
    sep = pccp["test_separation"]
    if sep is not None:
        rows = [["Split file", sep["split_file"]],
                ["SHA-256 recorded at training", cell(sep["split_sha256_at_training"] or "not recorded", "mono")],
                ["SHA-256 at evaluation", cell(sep["split_sha256_at_evaluation"] or "not available", "mono")]]
        rows += [[label, "n/a" if sep[key] is None else str(sep[key])] for key, label in (
            ("studies_in_split_file", "Studies in the split file"),
            ("conflicting_studies", "Studies with conflicting splits"), ("evaluated_studies", "Evaluated studies"),
            ("evaluated_in_training_splits", "Evaluated studies assigned to training/validation"),
            ("evaluated_outside_test_split", "Evaluated studies outside the test split"))]
        blocks += [{"kind": "h", "text": "Test-set separation evidence"}, table_block(None, rows, [0.45, 0.55],
                                                                                       kv=True)]
    return blocks


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _changed(row: dict) -> dict:
    if row["changed"] is None:
        return cell("not recorded" if row["champion"] is None or row["candidate"] is None else "n/a", "warn")
    return cell("changed" if row["changed"] else "same", "warn" if row["changed"] else None)


def champion_blocks(diff: dict) -> list[dict]:
    if diff["champion"] is None:
        unverified = diff.get("verified") is False
        return [{"kind": "banner" if unverified else "p", "tone": "bad", "text": diff["statement"]}]
    c = diff["champion"]
    metric_rows = [[cell(m["metric"], "strong"), fmt(m["champion"]), fmt(m["candidate"]),
                    cell(_signed(m["delta"]), None if m["better"] is None else "good" if m["better"] else "bad")]
                   for m in diff["metrics"]]

    def short(digest: str | None) -> str:
        return "not recorded" if digest is None else digest.removeprefix("sha256:")[:16]

    def hash_rows(rows):
        return [[cell(r["item"], "strong"), cell(short(r["champion"]), "mono"), cell(short(r["candidate"]), "mono"),
                 _changed(r)] for r in rows]

    header = ["Item", "Champion", "This version", "Change"]
    return [{"kind": "p", "text": f"{diff['statement']} Champion packet created {c['created']}, gate decision "
                                  f"{c['decision']}. Deltas are this version minus the champion."},
            {"kind": "h", "text": "Metrics"},
            table_block(["Metric", "Champion", "This version", "Delta"], metric_rows, [0.4, 0.2, 0.2, 0.2]),
            {"kind": "h", "text": "Data (SHA-256, first 16 hex digits)"},
            table_block(header, hash_rows(diff["data"]), [0.28, 0.27, 0.27, 0.18]),
            {"kind": "h", "text": "Model files (SHA-256, first 16 hex digits)"},
            table_block(header, hash_rows(diff["model"]), [0.28, 0.27, 0.27, 0.18]),
            {"kind": "h", "text": "Software"},
            table_block(header, hash_rows(diff["software"]), [0.28, 0.27, 0.27, 0.18])]


def model_file_blocks(model_files: dict | None) -> list[dict]:
    blocks = [{"kind": "h", "text": "Model files (SHA-256)"}]
    if not model_files:
        return blocks + [{"kind": "p", "text": "Model file hashes: not recorded."}]
    return blocks + [table_block(["File", "SHA-256"], [[name, cell(digest, "mono")] for name, digest in
                                                       model_files.items()], [0.24, 0.76])]


def sbom_blocks(sbom: dict) -> list[dict]:
    blocks = []
    if not sbom["recorded"]:
        blocks.append({"kind": "banner", "tone": "warn", "text": sbom["statement"]})
    else:
        counts = "; ".join(f"{r['licence']} ({r['components']})" for r in sbom["licence_counts"])
        blocks += [{"kind": "p", "text": f"CycloneDX {sbom['spec_version']} SBOM of the environment the model was "
                                         f"trained in, recorded at training ({sbom['timestamp'] or 'time n/a'}): "
                                         f"{sbom['components']} components, in {sbom['file']} in this packet."},
                   {"kind": "h", "text": "Licences (components)"}, {"kind": "p", "text": counts}]
        if sbom["data_components"]:
            blocks += [{"kind": "h", "text": "Data files recorded at training"},
                       table_block(["File", "Role", "SHA-256"],
                                   [[d["name"], ", ".join(d["roles"]), cell(d["sha256"] or "n/a", "mono")]
                                    for d in sbom["data_components"]], [0.2, 0.22, 0.58])]
    blocks.append({"kind": "h", "text": f"Needs attention before release ({len(sbom['attention'])})"})
    if sbom["attention"]:
        blocks.append(table_block(["Component", "Licence", "Why"],
                                  [[cell(f"{a['component']} {a['version']}".strip(), "strong"), a["licence"],
                                    cell(a["reason"], "warn")] for a in sbom["attention"]], [0.24, 0.24, 0.52]))
    else:
        blocks.append({"kind": "p", "text": "No licence needs attention."})
    return blocks


def estar_blocks(rows: list[dict]) -> list[dict]:
    return [{"kind": "p", "text": "The sections of an electronic submission (eSTAR) and where this packet holds "
                                  "their content; a section that does not apply says why."},
            table_block(["Submission section", "Status", "Where / why"],
                        [[cell(r["section"], "strong"), cell(r["status"], _STATUS_TONE[r["status"]]), r["detail"]]
                         for r in rows], [0.32, 0.14, 0.54])]


def gmlp_blocks(rows: list[dict]) -> list[dict]:
    return [{"kind": "p", "text": "Good Machine Learning Practice for Medical Device Development: Guiding "
                                  "Principles (FDA, Health Canada, MHRA, 2021), each with where its evidence is."},
            table_block(["Principle", "Status", "Evidence"],
                        [[cell(r["principle"], "strong"), cell(r["status"], _STATUS_TONE[r["status"]]),
                          r["evidence"]] for r in rows], [0.38, 0.14, 0.48])]
