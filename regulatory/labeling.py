"""The packet's fixed text: the default labeling of a report *drafting* aid (callers may override each one in
`PacketInputs`), and the notes on data and PHI every packet carries."""

from __future__ import annotations

DEFAULT_DEVICE_DESCRIPTION = (
    "The device is standalone software (Software as a Medical Device) that analyzes a digital adult chest "
    "radiograph (frontal PA or AP view) and produces a preliminary, unsigned draft of a radiology report "
    "(findings and impression) for the interpreting radiologist. It also outputs per-finding probabilities for the "
    "14 CheXpert observations from a detection head, with validation-chosen operating points for four critical "
    "findings (pneumothorax, fracture, lung lesion, pleural effusion); the agreement between the draft text and "
    "the detection head is used for quality-assurance flags that route a draft to closer radiologist review. "
    "The draft is shown only to the radiologist within the reporting workflow. It is never released to the "
    "medical record, to the referring clinician or to the patient until a radiologist has reviewed the images, "
    "edited the draft as needed and signed the report. The algorithm is locked: it does not learn or change "
    "during clinical use; a new version requires re-evaluation through the release gate documented in this packet."
)
DEFAULT_INTENDED_USE = (
    "The device is intended to assist qualified radiologists in reporting adult frontal chest radiographs by "
    "generating a preliminary draft report. The draft is a starting point for the radiologist's own "
    "interpretation and must be reviewed, edited as needed, and approved by a radiologist before it becomes part "
    "of the medical record. The device is not intended for autonomous diagnosis, to replace or reduce the "
    "radiologist's review of the images, to rule out any condition, or to triage or prioritize worklists."
)
DEFAULT_INDICATIONS = (
    "The device is indicated for use by radiologists (or physicians qualified to interpret chest radiographs "
    "under local regulations) interpreting frontal (posteroanterior or anteroposterior) chest radiographs of adult "
    "patients (18 years of age or older) acquired with digital (DR) or computed (CR) radiography systems, in a "
    "reporting workflow in which a radiologist reviews the images and every draft before the report is signed."
)
DEFAULT_CONTRAINDICATIONS = (
    "Pediatric patients (under 18 years of age), including neonates: not evaluated.",
    "Radiographs of any region other than the chest (e.g. abdomen, spine, extremities), and chest studies "
    "without a frontal PA or AP view (e.g. lateral-only, decubitus or oblique views).",
    "Other modalities: computed tomography (CT), magnetic resonance (MR), ultrasound, fluoroscopy, mammography, "
    "nuclear medicine.",
    "Any use without radiologist review of each draft: autonomous reporting, release of drafts to the medical "
    "record, to referring clinicians or to patients, and use as a triage, notification or worklist-prioritization "
    "tool.",
)
DEFAULT_WARNINGS = (
    "The draft may omit findings that are present or describe findings that are not present (including critical "
    "findings). The radiologist must interpret the images independently and must not use the draft to rule out "
    "any condition.",
    "The absence of a critical-finding flag does not exclude that finding.",
    "Laterality, size, and change-over-time statements in the draft are not verified by the device and must be "
    "checked against the images and prior studies.",
    "Performance was characterized only on the data described in Section 4 and may not generalize to other "
    "sites, equipment, patient populations or disease prevalence.",
)
DEFAULT_TECHNOLOGY = (
    "Locked deep-learning model: vision-transformer image encoder, projection module and autoregressive language "
    "model that generates free text (beam search); multi-label detection head (14 CheXpert observations) with "
    "temperature-scaled probabilities and validation-chosen thresholds for the critical findings."
)
DEFAULT_INPUT = ("Adult frontal (PA/AP) chest radiograph from digital (DR/CR) radiography, DICOM or derived grayscale "
                 "image.")
DEFAULT_OUTPUT = (
    "Unsigned draft free-text report (findings, impression) for radiologist review and editing; per-finding "
    "probabilities; quality-assurance flags when text and detection head disagree on a critical finding. No "
    "triage or notification output; nothing reaches the medical record before radiologist sign-off."
)
DEFAULT_SE_DISCUSSION = (
    "Substantial equivalence has not been established by this packet. Both devices analyse adult frontal chest "
    "radiographs with a locked machine-learning model and keep the radiologist responsible for interpretation. "
    "The subject device, however, generates free-text draft reports, whereas a triage/detection predicate "
    "outputs findings flags; this technological difference may raise different questions of safety and "
    "effectiveness (e.g. hallucinated or omitted findings in fluent text, automation bias). Regulatory Affairs "
    "must determine whether the 510(k) pathway is available or whether a Pre-Submission and a De Novo request "
    "are appropriate."
)
IU_XRAY_NOTE = (
    "The data are the bundled demonstration subset of the Indiana University Chest X-ray Collection (IU X-ray, "
    "Open-i), licensed CC BY-NC-ND 4.0 (Demner-Fushman D, et al. J Am Med Inform Assoc. 2016;23(2):304-310). "
    "This is a small, single-institution, retrospective public dataset with labels derived from MeSH annotations "
    "of the reports; it is NOT representative of the intended-use population, sites or equipment, and its use is "
    "limited to non-commercial evaluation. The performance in Section 5 demonstrates the evaluation pipeline, not "
    "clinical performance for a submission."
)
REPRESENTATIVENESS_NOTE = (
    "Representativeness of the data for the intended-use population (age, sex, race and ethnicity, sites, "
    "equipment, acquisition protocols, disease prevalence) is not established by this packet and must be "
    "documented from a multi-site, sequestered test set before submission."
)
PHI_STATEMENT = (
    "This packet contains no protected health information: no report text, no images or pixel data and no "
    "patient identifiers. Only known summary fields of the inputs are rendered, and every rendered text is "
    "screened for report-like content."
)

# The packet's sections in order: (key, title). Cross-references ("Section 6") are numbered from this list.
OUTLINE = (
    ("device", "Device description and intended use"),
    ("indications", "Indications for use and contraindications"),
    ("pathway", "Regulatory pathway and predicates"),
    ("data", "Training, validation and test data"),
    ("performance", "Clinical performance"),
    ("gate", "Release-gate decision"),
    ("errors", "Error analysis"),
    ("bias", "Bias audit: performance by subgroup"),
    ("risk", "Risk analysis"),
    ("pccp", "Predetermined Change Control Plan (PCCP)"),
    ("champion", "Changes since the current champion"),
    ("versions", "Software and model versions"),
    ("sbom", "Software bill of materials and licences"),
    ("estar", "Submission section manifest (eSTAR-style)"),
    ("gmlp", "Good Machine Learning Practice: the ten guiding principles"),
    ("release", "Release status"),
)


def section_ref(key: str) -> str:
    """'Section 6 (Release-gate decision)' for a key of OUTLINE."""
    keys = [k for k, _ in OUTLINE]
    return f"Section {keys.index(key) + 1} ({OUTLINE[keys.index(key)][1]})"
