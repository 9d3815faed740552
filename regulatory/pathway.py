"""The honest regulatory pathway, the eSTAR-style section manifest and the GMLP mapping.

No report-generating chest X-ray device has been cleared by FDA: the generator has no predicate and likely needs a
De Novo request. Cleared computer-assisted triage devices (21 CFR 892.2080) are cited as predicates for the
detection head's critical-finding claims only, finding by finding; a finding without one says so. The manifest and
the GMLP table are computed from the packet document: a section or principle whose evidence is missing says so.
"""

from __future__ import annotations

from model_core.chexpert import CRITICAL_FINDINGS
from regulatory.inputs import predicate_placeholders
from regulatory.labeling import section_ref

RECOMMENDED_PATHWAY = "De Novo classification request, preceded by a Pre-Submission (Q-Sub)"
PATHWAY_STATEMENT = (
    "No chest X-ray device that generates radiology reports has been cleared or authorized by FDA (Regulatory "
    "Affairs must confirm this against the FDA 510(k) and De Novo databases at submission). The report generator "
    "therefore has no predicate, and the draft-report function likely needs a De Novo classification request, "
    "preceded by a Pre-Submission to agree the evidence (including a reader study). Its new risks - hallucinated "
    "or omitted findings in fluent text, automation bias - are not raised by any cleared device."
)
DETECTION_STATEMENT = (
    "The detection head's critical-finding flags perform a function for which cleared computer-assisted triage "
    "and notification devices exist. Those devices are cited below as predicates for these claims ONLY; they are "
    "not predicates for the report generator, and no substantial-equivalence claim is made for the device as a "
    "whole."
)
# The detection head's function as compared with a triage predicate (the whole device's labeling is Section 1-2).
DETECTION_HEAD_USE = ("Per-finding probabilities for adult frontal chest radiographs, with validation-chosen "
                      "operating points for the critical findings; used inside the drafting workflow to flag drafts "
                      "for closer radiologist review. No worklist triage and no notification outside the workflow.")
DETECTION_HEAD_OUTPUT = ("Per-finding probability and a flag at the operating point, shown with the draft to the "
                         "reporting radiologist.")
NO_PREDICATE = "no cleared predicate listed: the claim rests on the De Novo evidence (or is dropped)"


def pathway_section(predicates: list[dict]) -> dict:
    """The pathway statement, the cited predicates (with their open placeholders) and, per critical finding of
    the detection head, the predicates cited for it."""
    cited = [{**p, "placeholders": predicate_placeholders(p)} for p in predicates]
    claims = []
    for finding in CRITICAL_FINDINGS:
        ks = [p["k_number"] for p in cited if finding in p["claims"]]
        claims.append({"finding": finding, "predicates": ks,
                       "status": f"{len(ks)} cleared predicate(s) cited" if ks else NO_PREDICATE})
    return {
        "recommended_pathway": RECOMMENDED_PATHWAY,
        "statement": PATHWAY_STATEMENT,
        "detection_statement": DETECTION_STATEMENT,
        "generator_predicate": None,
        "detection_head": {"intended_use": DETECTION_HEAD_USE, "output": DETECTION_HEAD_OUTPUT},
        "predicates": cited,
        "claims": claims,
        "complete": not any(p["placeholders"] for p in cited),
    }


INCLUDED, PARTIAL, TO_COMPLETE, NOT_APPLICABLE = "included", "partial", "to be completed", "not applicable"


def estar_manifest(doc: dict) -> list[dict]:
    """eSTAR-style submission sections: included (where), partial, to be completed (by whom), or not applicable
    (because ...). Computed from the packet document where the packet holds the evidence."""
    ref = section_ref
    sbom = doc["sbom"]["recorded"]
    rows = [
        ("Administrative information, cover letter, user fees", TO_COMPLETE, "Regulatory Affairs"),
        ("Device description", INCLUDED, ref("device")),
        ("Classification and regulatory pathway", INCLUDED, f"{ref('pathway')}: {RECOMMENDED_PATHWAY}"),
        ("Predicates and substantial equivalence", PARTIAL,
         f"{ref('pathway')}: detection-head claims only; the report generator has no predicate (De Novo)"),
        ("Labeling (intended use, indications, instructions for use)", PARTIAL,
         f"{ref('device')}, {ref('indications')}; the instructions for use are to be written"),
        ("Reprocessing", NOT_APPLICABLE, "not applicable because the device is software only, with no reusable "
                                         "or patient-contacting parts"),
        ("Sterility", NOT_APPLICABLE, "not applicable because the device is software only and is not supplied "
                                      "sterile"),
        ("Shelf life", NOT_APPLICABLE, "not applicable because software does not degrade with time; software "
                                       "updates are governed by the PCCP"),
        ("Biocompatibility", NOT_APPLICABLE, "not applicable because the device has no patient-contacting "
                                             "materials"),
        ("Electrical safety and electromagnetic compatibility", NOT_APPLICABLE,
         "not applicable because the device is software running on general-purpose IT hardware"),
        ("Wireless coexistence", NOT_APPLICABLE, "not applicable because the device has no wireless function"),
        ("Software documentation", PARTIAL if doc["versions"]["recorded"] else TO_COMPLETE,
         f"{ref('versions')} (versions recorded at training); architecture, requirements and IEC 62304 records "
         "from the design history file"),
        ("Cybersecurity (SBOM, threat model)", PARTIAL if sbom else TO_COMPLETE,
         (f"{ref('sbom')}: SBOM of the training environment; " if sbom else "SBOM not recorded with this model; ")
         + "signed packet (SHA256SUMS.sig); threat model and security architecture to be written"),
        ("Risk management (ISO 14971)", INCLUDED, ref("risk")),
        ("Performance testing - bench (standalone)", INCLUDED, f"{ref('performance')}, {ref('gate')}"),
        ("Performance testing - failure modes (error analysis)", *_evidence_row(doc["error_analysis"], "errors")),
        ("Performance testing - subgroups (bias audit)", *_evidence_row(doc["bias_audit"], "bias")),
        ("Performance testing - animal", NOT_APPLICABLE, "not applicable because image-analysis software is "
                                                         "evaluated on images, not in animals"),
        ("Performance testing - clinical", TO_COMPLETE, "a multi-site, sequestered clinical performance study and a "
                                                         "reader study (radiologists with and without the draft)"),
        ("Human factors and usability", TO_COMPLETE, "usability engineering file (IEC 62366-1)"),
        ("Predetermined Change Control Plan", INCLUDED, ref("pccp")),
        ("Quality management system information", TO_COMPLETE, "Quality Assurance"),
    ]
    return [{"section": s, "status": status, "detail": detail} for s, status, detail in rows]


def _evidence_row(section: dict, key: str) -> tuple[str, str]:
    """(status, detail) of an eSTAR row backed by a clinical-evidence section: included, or to be completed with
    what is missing."""
    if section["status"] == "included":
        return INCLUDED, section_ref(key)
    why = ("missing from the run: " + ", ".join(section["missing"]) if section["missing"]
           else "not run for this packet (the pipeline's clinical_evidence step)")
    return TO_COMPLETE, f"{section_ref(key)}: {why}"


EVIDENCE, GAP = "evidence in this packet", "gap"
GMLP_PRINCIPLES = (
    "Multi-disciplinary expertise is leveraged throughout the total product life cycle",
    "Good software engineering and security practices are implemented",
    "Clinical study participants and data sets are representative of the intended patient population",
    "Training data sets are independent of test sets",
    "Selected reference datasets are based upon best available methods",
    "Model design is tailored to the available data and reflects the intended use of the device",
    "Focus is placed on the performance of the human-AI team",
    "Testing demonstrates device performance during clinically relevant conditions",
    "Users are provided clear, essential information",
    "Deployed models are monitored for performance and re-training risks are managed",
)


def gmlp_mapping(doc: dict) -> list[dict]:
    """The ten GMLP guiding principles (FDA, Health Canada, MHRA, 2021), each with where its evidence is and
    whether the packet shows it (evidence / partial / gap), computed from the document."""
    ref = section_ref
    separation = next(c for c in doc["pccp"]["verdict"]["criteria"] if c["criterion"].startswith("Test set"))
    drift = doc["monitoring"]["drift"] is not None
    software = doc["versions"]["recorded"] and doc["sbom"]["recorded"]
    errors, bias = (doc[k]["status"] == "included" for k in ("error_analysis", "bias_audit"))
    subgroups = (f"; subgroup performance in {ref('bias')}" if bias
                 else f"; no subgroup performance: bias audit {doc['bias_audit']['status']}")
    rows = [
        (PARTIAL, f"Review and approval roles in {ref('release')}; team records in the design history file"),
        (EVIDENCE if software else PARTIAL,
         f"{ref('versions')}, {ref('sbom')}; signed, hash-verified packet; automated tests and import contracts"),
        (GAP if doc["data"]["is_iu_xray_demo"] else PARTIAL,
         f"{ref('data')}: representativeness is not established by this data" + subgroups),
        (EVIDENCE if separation["status"] == "met" else GAP, f"{ref('pccp')}: {separation['evidence']}"),
        (PARTIAL, f"{ref('data')}: labels from human MeSH annotation; a radiologist-consensus reference standard is "
                  "needed for a submission"),
        (EVIDENCE, f"{ref('device')}: architecture and detection head with validation-chosen operating points"),
        (GAP, "a reader study of radiologists with and without the draft is to be performed"),
        (PARTIAL, f"{ref('performance')}: held-out test split; single-institution, retrospective"
                  + (f"; failure modes in {ref('errors')}" if errors
                     else f"; no error analysis: {doc['error_analysis']['status']}") + subgroups),
        (EVIDENCE, f"{ref('device')}, {ref('indications')}: intended use, contraindications, warnings"),
        (EVIDENCE if drift else PARTIAL, f"{ref('pccp')} (monitoring and update procedures)"
                                         + (f"; drift evidence in {ref('risk')}" if drift else
                                            "; no drift evidence supplied with this packet")),
    ]
    return [{"principle": f"{i}. {text}", "status": status, "evidence": where}
            for i, (text, (status, where)) in enumerate(zip(GMLP_PRINCIPLES, rows), 1)]
