"""Report generation: beam search over the LM conditioned on the image tokens, then structuring.

`generate_texts` returns report text; `generate_report` returns the structured report the API serves:
findings (text, CheXpert label, status, detection-head confidence, severity, is_critical, bounding_box=None since
no localiser exists), the normal findings the text states, impression, recommendations and the full text. The
collection's `XXXX` de-identification tokens are banned during search and stripped after it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS, LABEL_INDEX, NEGATIVE, POSITIVE, UNCERTAIN
from model_core.config import GenerationConfig
from model_core.data.reports import split_sections
from model_core.labels.aggregate import mentioned_labels
from model_core.labels.labeler import find_mentions
from model_core.labels.targets import NO_FINDING, OTHER
from model_core.modeling.grounding import ground_report, stated_findings
from model_core.modeling.hints import hinted_findings
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.tokenizer import build_prompt, clean_text, encode_example, pad_batch

_SEVERITY = re.compile(r"\b(trace|minimal|tiny|mild|small|moderate|large|severe|massive)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

# Plain-language phrase for a finding the detection head reports but the text does not describe.
FINDING_PHRASES = {
    "Enlarged Cardiomediastinum": "Enlarged cardiomediastinal silhouette.",
    "Cardiomegaly": "Cardiomegaly.",
    "Lung Opacity": "Pulmonary opacity.",
    "Lung Lesion": "Lung nodule or mass.",
    "Edema": "Pulmonary edema.",
    "Consolidation": "Consolidation.",
    "Pneumonia": "Findings suggestive of pneumonia.",
    "Atelectasis": "Atelectasis.",
    "Pneumothorax": "Pneumothorax.",
    "Pleural Effusion": "Pleural effusion.",
    "Pleural Other": "Pleural thickening.",
    "Fracture": "Fracture.",
    "Support Devices": "Support device in place.",
}

# Follow-up wording by finding; the critical-results line is added for every critical finding.
RECOMMENDATIONS = {
    "Lung Lesion": "Chest CT is recommended to characterise the lung nodule or mass.",
    "Pneumonia": "Clinical correlation and follow-up radiograph after treatment are recommended.",
    "Consolidation": "Follow-up radiograph is recommended to document resolution.",
    "Edema": "Correlate with clinical volume status.",
    "Fracture": "Dedicated rib or spine imaging as clinically indicated.",
}


# A sentence that states a normal result without naming an observation the labeler knows ("The heart is normal in
# size.", "The lungs are clear."): the observation whose absence it states, by the anatomy it names. A normal
# sentence naming none of them ("Normal chest.", "No acute cardiopulmonary abnormality.") states No Finding.
_NORMAL_CUE = re.compile(r"\b(?:normal|clear|unremarkable|intact|negative|no acute|well[- ](?:expanded|aerated)"
                         r"|without (?:acute |evidence of )?(?:abnormality|abnormalities|disease))\b", re.IGNORECASE)
NORMAL_ANATOMY = {
    "Cardiomegaly": re.compile(r"\b(?:heart|cardiac)\b", re.IGNORECASE),
    "Enlarged Cardiomediastinum": re.compile(r"\b(?:cardiomediastinal|mediastin\w*|hil(?:ar|um|a))\b", re.IGNORECASE),
    "Edema": re.compile(r"\bpulmonary vascula\w*|\bvascularity\b", re.IGNORECASE),
    "Lung Opacity": re.compile(r"\blungs?\b(?! volume)|\bairspaces?\b|\blung fields?\b", re.IGNORECASE),
    "Pleural Effusion": re.compile(r"\bpleura(?:l spaces?)?\b|\bcostophrenic\b", re.IGNORECASE),
    "Fracture": re.compile(r"\b(?:osseous|bony|bones?|skeletal|ribs?)\b", re.IGNORECASE),
}
OTHER_LABEL = "Other"   # an abnormality outside the 14 CheXpert labels (granuloma, degenerative spine, ...)


@dataclass
class Finding:
    """One observation of the report.

    status: "present", "uncertain" (hedged in the text) or "normal" (the text rules the observation out, or states
    the study is normal: label "No Finding").
    confidence: the detection head's (temperature-calibrated) support for the statement as written: P(label) for a
    present or uncertain finding, 1 - P(label) for a normal one; for "Other", 1 - P(No Finding); for the normal
    statement "No Finding", P(No Finding).
    source: "text+detector" (the detector agrees at its operating point), "text", or "detector" (the detector alone).
    """

    finding: str
    label: str
    confidence: float
    severity: str | None
    is_critical: bool
    bounding_box: list[float] | None = None
    source: str = "text+detector"
    status: str = "present"


@dataclass
class StructuredReport:
    """findings: what the report asserts (present or uncertain) plus what the detector alone reports; a critical
    one has is_critical. normal_findings: what the text states is normal (status "normal"), each label once."""

    findings: list[Finding]
    impression: str
    recommendations: list[str]
    text: str
    findings_text: str = ""
    label_probabilities: dict[str, float] = field(default_factory=dict)
    normal_findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _bad_words_ids(tokenizer) -> list[list[int]]:
    """Token ids whose text contains the de-identification marker 'XX' (never valid report content)."""
    vocab = tokenizer.get_vocab()
    return [[i] for tok, i in vocab.items() if "XX" in tokenizer.convert_tokens_to_string([tok])]


@torch.no_grad()
def generate_texts(model: RadiologyMultimodalModel, images: torch.Tensor | None = None,
                   clinical_contexts: list[dict | None] | None = None, gen: GenerationConfig | None = None,
                   vision_features: torch.Tensor | None = None, question: str | None = None,
                   ground: bool | None = None) -> tuple[list[str], torch.Tensor]:
    """Beam-search report texts for a batch and the detection head's label logits (B, 14).

    ground: write the head's stated findings into the drafts (`model_core.modeling.grounding`); None: as the
    model's config says (`grounded_findings`); False: the LM's drafts as decoded (evaluation's ablation)."""
    gen = gen or GenerationConfig()
    model.eval()
    if vision_features is None:
        if images is None:
            raise ValueError("generate needs images or vision_features")
        vision_features = model.encode_images(images)
    batch, views = vision_features.shape[:2]
    contexts = clinical_contexts or [None] * batch
    if len(contexts) != batch:
        raise ValueError(f"{len(contexts)} clinical contexts for a batch of {batch} studies")
    tok = model.tokenizer
    label_logits = model.detect(vision_features)
    findings = (hinted_findings(label_logits.detach().cpu().numpy(), model.config.hint_logit_thresholds)
                if model.config.findings_hint else [None] * batch)
    prefixes = [encode_example(tok, build_prompt(c, question, f), None, views * model.num_image_tokens)[0]
                for c, f in zip(contexts, findings)]
    ids, mask = pad_batch(prefixes, tok.pad_token_id, left=True)
    embeds = model.merge_image_embeddings(vision_features, ids)
    if not hasattr(model, "_bad_words_cache"):
        model._bad_words_cache = _bad_words_ids(tok)
    max_new = min(gen.max_new_tokens, model.max_positions - ids.shape[1])
    if max_new <= 0:
        raise ValueError(f"the prompt ({ids.shape[1]} tokens) leaves no room in the LM's "
                         f"{model.max_positions} positions")
    out = model.language_model.generate(
        inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new, num_beams=gen.num_beams,
        min_new_tokens=min(gen.min_new_tokens, max_new),
        no_repeat_ngram_size=gen.no_repeat_ngram_size, repetition_penalty=gen.repetition_penalty,
        length_penalty=gen.length_penalty, early_stopping=True, do_sample=False,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        bad_words_ids=model._bad_words_cache or None,
    )
    # With inputs_embeds only, generate returns just the new tokens.
    texts = [clean_text(t) for t in tok.batch_decode(out, skip_special_tokens=True)]
    if model.config.grounded_findings if ground is None else ground:
        stated = stated_findings(label_logits.detach().cpu().numpy(), model.config.grounding_logit_thresholds)
        texts = [ground_report(text, labels) for text, labels in zip(texts, stated)]
    return texts, label_logits


def _sentence_statements(sentence: str) -> tuple[dict[str, float], bool, list[str]]:
    """What one sentence states: {CheXpert label: state} it mentions, whether it asserts an abnormality outside
    the 14, and the labels a normal-anatomy sentence rules out (`NORMAL_ANATOMY`, No Finding if none)."""
    mentions = find_mentions(sentence)
    states = mentioned_labels(mentions)
    other = any(m.label == OTHER and m.state != NEGATIVE for m in mentions)
    normal = []
    if not other and all(s == NEGATIVE for s in states.values()) and _NORMAL_CUE.search(sentence):
        normal = [label for label, pattern in NORMAL_ANATOMY.items() if pattern.search(sentence)]
        if not normal and not states:
            normal = [NO_FINDING]
    return states, other, normal


def structure_report(text: str, probs: np.ndarray, thresholds: dict[str, float] | None = None,
                     confidence_threshold: float = 0.5) -> StructuredReport:
    """Combine generated text with detection-head probabilities (14,) into a structured report.

    Every observation the text describes is listed, with the detection head's confidence (see `Finding`):
    asserted ones (labeler: positive or uncertain, per sentence; an abnormality outside the 14 as "Other") in
    `findings`, the ones the text rules out — negated mentions and normal-anatomy sentences — in
    `normal_findings`. A finding the text does not assert is also listed when the detection head alone reaches
    both its operating threshold and `confidence_threshold` (the operating thresholds of critical findings are
    screening points tuned for 98 % sensitivity: they decide review flags, not what the report asserts).
    """
    thresholds = thresholds or {}
    probs = np.asarray(probs, dtype=np.float64)
    sections = split_sections(text)
    sentences = [s.strip() for s in _SENTENCE.split(sections["findings"] + " " + sections["impression"]) if s.strip()]
    asserted: dict[str, tuple[str, float]] = {}     # label -> (first sentence asserting it, strongest state)
    ruled_out: dict[str, str] = {}                  # label -> first sentence ruling it out
    others: list[str] = []
    for sentence in sentences:
        states, other, normal = _sentence_statements(sentence)
        for label, state in states.items():
            if state != NEGATIVE:
                first, best = asserted.get(label, (sentence, state))
                asserted[label] = (first, POSITIVE if POSITIVE in (best, state) else UNCERTAIN)
            else:
                ruled_out.setdefault(label, sentence)
        for label in normal:
            ruled_out.setdefault(label, sentence)
        if other and not any(s != NEGATIVE for s in states.values()):
            others.append(sentence)

    findings = []
    for k, label in enumerate(CHEXPERT_LABELS):
        if label == NO_FINDING:
            continue
        supported = probs[k] >= thresholds.get(label, 0.5)              # the detector agrees at its operating point
        detected = supported and probs[k] >= confidence_threshold      # confident enough to list on its own
        if label not in asserted and not detected:
            continue
        sentence, state = asserted.get(label, (FINDING_PHRASES[label], POSITIVE))
        severity = _SEVERITY.search(sentence)
        findings.append(Finding(
            finding=sentence, label=label, confidence=round(float(probs[k]), 4),
            severity=severity.group(1).lower() if severity else None, is_critical=label in CRITICAL_FINDINGS,
            source="text+detector" if label in asserted and supported else "text" if label in asserted else "detector",
            status="uncertain" if state == UNCERTAIN else "present"))
    abnormal = round(1.0 - float(probs[LABEL_INDEX[NO_FINDING]]), 4)
    for sentence in others:
        severity = _SEVERITY.search(sentence)
        findings.append(Finding(finding=sentence, label=OTHER_LABEL, confidence=abnormal,
                                severity=severity.group(1).lower() if severity else None, is_critical=False,
                                source="text"))
    listed = {f.label for f in findings}
    if listed - {"Support Devices"}:
        ruled_out.pop(NO_FINDING, None)             # "no acute abnormality" beside an abnormality: not a normal study
    normal_findings = [
        Finding(finding=sentence, label=label, is_critical=False, severity=None, source="text", status="normal",
                confidence=round(float(probs[LABEL_INDEX[label]]) if label == NO_FINDING
                                 else 1.0 - float(probs[LABEL_INDEX[label]]), 4))
        for label, sentence in sorted(ruled_out.items(), key=lambda item: LABEL_INDEX[item[0]])
        if label not in listed]
    return StructuredReport(
        findings=findings, impression=sections["impression"], recommendations=recommendations_for(findings),
        text=text, findings_text=sections["findings"],
        label_probabilities={label: round(float(p), 4) for label, p in zip(CHEXPERT_LABELS, probs)},
        normal_findings=normal_findings)


def recommendations_for(findings: list[Finding]) -> list[str]:
    recs = []
    critical = sorted({f.label for f in findings if f.is_critical and f.source != "detector"})
    if critical:
        recs.append(f"Critical finding(s): {', '.join(c.lower() for c in critical)}. "
                    "Communicate to the referring clinician per the critical-results policy.")
    flagged = sorted({f.label for f in findings if f.is_critical and f.source == "detector"})
    if flagged:
        recs.append(f"The detector flags possible {', '.join(c.lower() for c in flagged)} not described in the "
                    "text: radiologist review required.")
    for f in findings:
        rec = RECOMMENDATIONS.get(f.label)
        if rec and rec not in recs:
            recs.append(rec)
    return recs


def generate_report(model: RadiologyMultimodalModel, images: torch.Tensor, clinical_context: dict | None = None,
                    gen: GenerationConfig | None = None, thresholds: dict[str, float] | None = None,
                    temperature: float = 1.0, question: str | None = None,
                    confidence_threshold: float = 0.5) -> StructuredReport:
    """One study: images (K, 1, H, W) or (1, H, W) → StructuredReport."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    texts, logits = generate_texts(model, images.unsqueeze(0), [clinical_context], gen, question=question)
    probs = torch.sigmoid(logits / temperature)[0].numpy()
    return structure_report(texts[0], probs, thresholds, confidence_threshold)
