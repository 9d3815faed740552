"""Report tokenizer, prompt and training-example encoding.

A from-scratch LM gets a byte-level BPE tokenizer trained on the training reports (`tokenizers`);
a pretrained LM keeps its own tokenizer, with `<image>` (and a pad token if missing) added.

Sequence layout of one example (T tokens):
    <bos> prompt-text  <image> × (K·N)  "Report:"  FINDINGS: … IMPRESSION: … <eos>  <pad>…
    labels are IGNORE_INDEX everywhere but on the report tokens and <eos>.
"""

from __future__ import annotations

import re

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from model_core.data.reports import (
    end_sections,
    format_report,
    normalize_punctuation,
    prior_study_from_comparison,
    split_sections,
)
from model_core.modeling.model import IGNORE_INDEX

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
DEFAULT_INSTRUCTION = "Write the findings and impression of this chest radiograph."
_DEID = re.compile(r"-?\bX{2,}\b")
_MASKED_AGE = re.compile(r"\bX{2,}[- ](?:year|yr)s?[- ]old\b", re.IGNORECASE)


def train_report_tokenizer(texts: list[str], vocab_size: int = 2000):
    """Byte-level BPE trained on report (and prompt) text → `PreTrainedTokenizerFast` with our special tokens."""
    if not texts:
        raise ValueError("cannot train a tokenizer on no text")
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")]
        + [IMAGE_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return fast


def prepare_pretrained_tokenizer(path: str):
    """A pretrained LM's tokenizer with `<image>` (and a pad token, if it has none) added."""
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token
    return tok


def clean_text(text: str) -> str:
    """Text without the collection's de-identification masks (`XXXX`, and "XXXX-year-old" whole), with one way of
    punctuating and spelling (`model_core.data.reports.normalize_punctuation`); in a report (text with section
    headers) every section ends its last sentence (`end_sections`). Training targets, drafts of the torch and ONNX
    Runtime generators, prompts and questions all pass through it."""
    return end_sections(normalize_punctuation(_DEID.sub("", _MASKED_AGE.sub("", text or ""))))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def clean_target(report: str) -> str:
    """A training target without dictation or de-identification damage.

    Punctuation and split words are normalised first ("effusion.." and "Cardio mediastinal" are in the
    collection's own reports: a model trained on them writes them). Sentences holding `XXXX` are then dropped
    whole (removing only the token leaves broken text such as "The heart and lungs have in the interval"); a
    section that would become empty keeps its sentences with the tokens removed instead.
    """
    sections = split_sections(report)
    kept = {}
    for name, text in sections.items():
        sentences = [s for s in _SENTENCE_END.split(normalize_punctuation(text)) if s.strip()]
        whole = [s for s in sentences if not _DEID.search(s)]
        kept[name] = " ".join(whole) if whole else clean_text(text)
    return clean_text(format_report(kept["findings"], kept["impression"]))


def prompt_context(clinical_context: dict | None) -> dict:
    """The clinical context a prompt states: age, sex, indication (masks removed) and whether a prior study exists.

    Accepts the serving API's dict (`prior_studies`: a list, empty when the caller gave none) or a dataset's
    metadata (`comparison`: the report's free-text field, parsed by `prior_study_from_comparison`). An empty
    `prior_studies` list means "not stated", not "no prior".
    """
    ctx = clinical_context or {}
    has_prior = None
    if ctx.get("prior_studies"):
        has_prior = True
    elif ctx.get("comparison") is not None:
        has_prior = prior_study_from_comparison(ctx["comparison"])["has_prior"]
    sex = ctx.get("sex")
    return {"age": int(ctx["age"]) if ctx.get("age") is not None else None,
            "sex": sex if sex in ("M", "F") else None,
            "indication": clean_text(str(ctx.get("indication") or "")).rstrip(" .;,:!?"),
            "has_prior": has_prior}


def build_prompt(clinical_context: dict | None = None, question: str | None = None,
                 findings: list[str] | None = None) -> str:
    """Instruction (or a free-text question, VQA-style) plus the clinical context that is present, plus the findings
    hint when given (`model_core.modeling.hints`; [] states "Detected: none.").

    "Write the findings and impression of this chest radiograph. Sex: F. Prior study: none. Indication: chest pain."
    Prior-study dates are not stated (calendar dates are PHI, and IU masks all of them: a model trained on IU has
    never seen one, so stating them at serving time would be a training/serving skew).
    """
    parts = [clean_text(question) if question else DEFAULT_INSTRUCTION]
    ctx = prompt_context(clinical_context)
    if ctx["age"] is not None:
        parts.append(f"Age: {ctx['age']}.")
    if ctx["sex"]:
        parts.append(f"Sex: {ctx['sex']}.")
    if ctx["has_prior"] is not None:
        parts.append(f"Prior study: {'yes' if ctx['has_prior'] else 'none'}.")
    if findings is not None:
        parts.append(f"Detected: {', '.join(findings) or 'none'}.")
    if ctx["indication"]:  # last: the longest part, the one `encode_example` truncates
        parts.append(f"Indication: {ctx['indication']}.")
    return " ".join(parts)


def encode_example(tokenizer, prompt: str, report: str | None, num_image_tokens: int,
                   max_report_tokens: int = 128, max_prompt_tokens: int = 64) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one study; with report=None, the generation prefix only (labels empty)."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)[:max_prompt_tokens]
    marker = tokenizer.encode(" Report:", add_special_tokens=False)
    image_tokens = [tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] * num_image_tokens
    prefix = [tokenizer.bos_token_id] + prompt_ids + image_tokens + marker
    if report is None:
        return prefix, []
    target = tokenizer.encode(" " + report.strip(), add_special_tokens=False)[:max_report_tokens]
    target = target + [tokenizer.eos_token_id]
    return prefix + target, [IGNORE_INDEX] * len(prefix) + target


def pad_batch(sequences: list[list[int]], pad_value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to (B, T_max); returns (ids, attention_mask). Left padding is for generation prefixes."""
    if not sequences:
        raise ValueError("empty batch")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if left:
            ids[i, width - len(seq):] = torch.tensor(seq)
            mask[i, width - len(seq):] = 1
        else:
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
    return ids, mask
