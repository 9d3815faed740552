"""Report generation from an export directory with ONNX Runtime: no torch model needed.

    OrtReportGenerator(export_dir).generate(images, contexts) → (texts, label_logits)

The prompt building, XX-token ban, greedy decoding and beam search of
`model_core.modeling.generation.generate_texts`, in numpy over the KV-cache decoder of `model_core.export`. The
FP32 texts equal torch's (tests/model_core/export, tests/model_core/runtime). This is the one beam search of the
project: serving (`serving.backends.onnxruntime`) and the export's parity check and calibration use it as is.

What makes it fit for serving, all without changing a text (tests/reference_decoding.py is the plain oracle):
- logits processors vectorised over the beams (`model_core.runtime.decoding`), not a Python scan per row;
- candidate selection by a partial, stable top-k (`top_k_stable`) instead of a full sort of B × num_beams·V;
- the KV cache reordered in place, copying only the rows whose beam changed (`reorder_cache`);
- studies that are done leave the batch (`compact_done`, default True): their rows are dropped from the KV
  cache and no longer run through the decoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from model_core.artifacts import PRESENT_PREFIX, TOKENIZER_DIR, past_names
from model_core.config import GenerationConfig, build_section
from model_core.modeling.generation import _bad_words_ids
from model_core.modeling.grounding import ground_report, stated_findings
from model_core.modeling.hints import hinted_findings
from model_core.modeling.model import ModelInputError
from model_core.modeling.tokenizer import build_prompt, clean_text, encode_example, pad_batch
from model_core.runtime.decoding import apply_logits_processors, log_softmax, prompt_positions, top_k_stable
from model_core.runtime.session import ExportError, decoder_file, open_session, read_export_config, resolve_providers

_DEAD_SCORE = -1e9    # the score of a beam slot that holds nothing (never chosen over a real candidate)


class OrtReportGenerator:
    """Report generation from an export directory with ONNX Runtime (see the module docstring).

    precision: "fp32" (decoder.onnx) or "int8" (decoder.int8.onnx); the vision graph is always FP32.
    provider: an ONNX Runtime provider name, "cpu", "cuda" or "auto" (CUDA when available); default CPU.
    gen: generation settings (default: the training run's saved generation config).
    threads: intra-op threads per session (default: ONNX Runtime's choice).
    compact_done: beam search drops the studies that are done from the batch (default). A done study's result
        can no longer change, so the texts are the same either way; False keeps them to the end, as
        transformers does (tests, benchmarks). A plain attribute: it may be changed between calls.

    Public steps, for the export's parity check and calibration and for subclasses that observe the search:
    `encode_images`, `prompt`, `empty_past`, `step` (one decoder call), `process_scores` (the logits
    processors) and `reorder_cache` (the cache gathered to the surviving beams).
    """

    def __init__(self, export_dir: str | os.PathLike, precision: str = "fp32",
                 provider: str | None = "CPUExecutionProvider", gen: GenerationConfig | None = None,
                 threads: int | None = None, compact_done: bool = True):
        export_dir = Path(export_dir)
        self.meta = read_export_config(export_dir)
        decoder = decoder_file(self.meta, precision)
        if not decoder or not (export_dir / decoder).is_file():
            raise ExportError(f"{export_dir} has no {precision} decoder; export with quantize=True")
        self.precision = precision
        self.compact_done = compact_done
        self.gen = gen or build_section(GenerationConfig, self.meta["generation"], "generation.")
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(export_dir / TOKENIZER_DIR)
        self.embed = np.load(export_dir / self.meta["files"]["embed_tokens"])      # (V, d_l)
        providers = resolve_providers(provider)
        self.vision = open_session(export_dir / self.meta["files"]["vision"], providers, threads)
        self.decoder = open_session(export_dir / decoder, providers, threads)
        self.provider = self.decoder.get_providers()[0]
        self.num_layers = self.meta["num_layers"]
        self.past_inputs = past_names(self.num_layers)
        self.outputs = ["logits", *past_names(self.num_layers, PRESENT_PREFIX)]
        self.eos, self.pad = self.meta["eos_token_id"], self.meta["pad_token_id"]
        # The same single-token XX ban as generate_texts (transformers drops a ban on EOS itself).
        self.banned = np.array(sorted({ids[0] for ids in _bad_words_ids(self.tokenizer)
                                       if len(ids) == 1 and ids[0] != self.eos and ids[0] < self.embed.shape[0]}),
                               dtype=np.int64)

    # ---- model parts

    def check_images(self, images) -> np.ndarray:
        """(B, 1, H, W) or (B, K, 1, H, W) in [0, 1], K ≤ the model's view slots V (all-NaN = a missing view) →
        float32 (B, V, 1, H, W), slots past K missing; clear errors otherwise (the torch model's rules)."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if not isinstance(images, np.ndarray):
            raise ModelInputError(f"images must be a numpy array, got {type(images).__name__}")
        if images.ndim == 4:
            images = images[:, None]
        size = self.meta["image_size"]
        views = int(self.meta.get("views", 1))
        if images.ndim != 5:
            raise ModelInputError(f"images must be (B, 1, H, W) or (B, K, 1, H, W), got shape {images.shape}")
        if images.shape[0] == 0 or images.shape[1] == 0:
            raise ModelInputError("empty batch: no images")
        if images.shape[2] != 1:
            raise ModelInputError(f"images must be single-channel grayscale (1, H, W), got {images.shape[2]} channels")
        if images.shape[3:] != (size, size):
            raise ModelInputError(f"images must be {size}×{size}, got {images.shape[3]}×{images.shape[4]}; "
                                  "preprocess with model_core.data.images.load_image(path, size)")
        if images.shape[1] > views:
            raise ModelInputError(f"the model takes at most {views} view(s) per study, got {images.shape[1]}")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.shape[1] < views:
            pad = np.full((images.shape[0], views - images.shape[1], *images.shape[2:]), np.nan, np.float32)
            images = np.concatenate([images, pad], axis=1)
        nan = np.isnan(images).reshape(*images.shape[:2], -1)
        present = ~nan.all(-1)
        if (nan.any(-1) & present).any():
            raise ModelInputError("an image has non-finite pixels (only a whole missing view may be NaN)")
        if not present.any(1).all():
            raise ModelInputError("a study has no image: at least one view is needed")
        return images

    def encode_images(self, images) -> tuple[np.ndarray, np.ndarray]:
        """images → (visual_tokens (B, K·N, d_l), label_logits (B, 14))."""
        visual_tokens, label_logits = self.vision.run(None, {"images": self.check_images(images)})
        return visual_tokens, label_logits

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.meta["kv_heads"], 0, self.meta["head_dim"])
        return [np.zeros(shape, np.float32) for _ in self.past_inputs]

    def step(self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decoder call: embeds (B, T, d_l), mask (B, P+T), positions (B, T), past → logits (B, T, V), present."""
        feed = {"inputs_embeds": embeds.astype(np.float32, copy=False), "attention_mask": mask.astype(np.int64),
                "position_ids": positions.astype(np.int64), **dict(zip(self.past_inputs, past))}
        logits, *present = self.decoder.run(self.outputs, feed)
        return logits, present

    def prompt(self, visual_tokens: np.ndarray, views: int, clinical_contexts, question: str | None = None,
               label_logits: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded prompt embeddings (B, T, d_l) with the visual tokens in the <image> slots, and mask (B, T).
        label_logits (B, 14): the head's, for the findings hint of an export that states findings."""
        tok = self.tokenizer
        findings = [None] * len(clinical_contexts)
        if self.meta.get("hint_logit_thresholds") is not None:
            if label_logits is None:
                raise ValueError("this export states the head's findings in the prompt: pass label_logits")
            findings = hinted_findings(label_logits, self.meta["hint_logit_thresholds"])
        prefixes = [encode_example(tok, build_prompt(c, question, f), None, views * self.meta["num_image_tokens"])[0]
                    for c, f in zip(clinical_contexts, findings)]
        ids, mask = (t.numpy() for t in pad_batch(prefixes, tok.pad_token_id, left=True))
        embeds = self.embed[ids]
        slots = ids == self.meta["image_token_id"]
        if not (slots.sum(1) == visual_tokens.shape[1]).all():
            raise ModelInputError(f"image-token count mismatch: {slots.sum(1).tolist()} <image> tokens per sample, "
                                  f"the images give {visual_tokens.shape[1]}")
        # Boolean assignment fills the slots row by row, in order: the same placement as torch's masked_scatter.
        embeds[slots] = visual_tokens.reshape(-1, visual_tokens.shape[-1])
        return embeds, mask

    def process_scores(self, tokens: np.ndarray, scores: np.ndarray, min_new: int = 0) -> np.ndarray:
        """The configured logits processors (`apply_logits_processors`) on log-probabilities/logits (R, V) of rows
        that generated `tokens` (R, t) so far; returns a processed copy."""
        scores = apply_logits_processors(tokens, scores, self.gen.repetition_penalty, self.gen.no_repeat_ngram_size,
                                         self.banned)
        if tokens.shape[1] < min_new:     # transformers' MinNewTokensLengthLogitsProcessor: no EOS before min_new
            scores[:, self.eos] = -np.inf
        return scores

    def reorder_cache(self, past: list[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
        """The KV cache gathered to the surviving beams: row i of the result is row rows[i] of the input.

        With the row count unchanged, in place, copying only the rows that change (ORT's outputs are fresh arrays
        each step, so they are safe to edit); when studies left the batch, a gather into new arrays.
        """
        if past and rows.size != past[0].shape[0]:
            return [p[rows] for p in past]
        moved = np.flatnonzero(rows != np.arange(rows.size))
        if moved.size:
            source = rows[moved]
            for p in past:
                p[moved] = p[source]   # the right-hand side is gathered into a copy first
        return past

    # ---- generation

    def generate(self, images, clinical_contexts: list[dict | None] | None = None, num_beams: int | None = None,
                 max_new_tokens: int | None = None, question: str | None = None) -> tuple[list[str], np.ndarray]:
        """Report texts and label logits (B, 14) for images (B, K, 1, H, W) in [0, 1] (numpy float32).

        num_beams=1 is greedy decoding; otherwise beam search with the configured length penalty,
        no-repeat n-gram size and repetition penalty, stopping as transformers does with early_stopping=True.
        """
        images = self.check_images(images)
        batch = images.shape[0]
        contexts = clinical_contexts or [None] * batch
        if len(contexts) != batch:
            raise ValueError(f"{len(contexts)} clinical contexts for a batch of {batch} studies")
        num_beams = self.gen.num_beams if num_beams is None else num_beams
        if num_beams < 1:
            raise ValueError(f"num_beams must be ≥ 1, got {num_beams}")
        visual_tokens, label_logits = self.encode_images(images)
        embeds, mask = self.prompt(visual_tokens, images.shape[1], contexts, question, label_logits)
        max_new = min(self.gen.max_new_tokens if max_new_tokens is None else max_new_tokens,
                      self.meta["max_positions"] - embeds.shape[1])
        if max_new <= 0:
            raise ValueError(f"the prompt ({embeds.shape[1]} tokens) leaves no room in the LM's "
                             f"{self.meta['max_positions']} positions")
        min_new = min(self.gen.min_new_tokens, max_new)    # as generate_texts passes it
        if num_beams == 1:
            tokens = self._greedy(embeds, mask, max_new, min_new)
        else:
            tokens = self._beam_search(embeds, mask, max_new, num_beams, min_new)
        return self.finish_texts(tokens, label_logits), label_logits

    def finish_texts(self, tokens: list[list[int]], label_logits: np.ndarray) -> list[str]:
        """Decoded tokens → report texts: cleaned, and grounded in the head's findings when the export says so
        (`model_core.modeling.grounding`, as `generate_texts` does)."""
        texts = [clean_text(t) for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        if self.meta.get("grounding_logit_thresholds") is not None:
            stated = stated_findings(label_logits, self.meta["grounding_logit_thresholds"])
            texts = [ground_report(text, labels) for text, labels in zip(texts, stated)]
        return texts

    def _greedy(self, embeds: np.ndarray, mask: np.ndarray, max_new: int, min_new: int = 0) -> list[list[int]]:
        batch = embeds.shape[0]
        logits, past = self.step(embeds, mask, prompt_positions(mask), self.empty_past(batch))
        tokens = np.zeros((batch, 0), np.int64)
        unfinished = np.ones(batch, bool)
        for step in range(max_new):
            scores = self.process_scores(tokens, logits[:, -1].astype(np.float32), min_new)
            nxt = np.where(unfinished, scores.argmax(-1), self.pad)   # finished rows only pad
            tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
            unfinished &= nxt != self.eos
            if not unfinished.any() or step + 1 == max_new:
                break
            mask = np.concatenate([mask, np.ones((batch, 1), mask.dtype)], axis=1)
            logits, past = self.step(self.embed[nxt][:, None], mask, mask.sum(1, keepdims=True) - 1, past)
        return tokens.tolist()

    def _beam_search(self, embeds: np.ndarray, mask: np.ndarray, max_new: int, num_beams: int,
                     min_new: int = 0) -> list[list[int]]:
        """Beam search over the KV cache, with the candidate rules of transformers 4.57 (`_beam_search`).

        Per step: log-softmax, processors, add the beams' running scores, keep the top 2·num_beams
        continuations of each study. Of these, the ones ending in EOS (or every one at the last step) that rank
        among the top num_beams become finished hypotheses scored sum_logprob / length**length_penalty; the best
        num_beams that do not end continue. A study is done once it holds num_beams finished hypotheses
        (early_stopping=True); the search stops when all are done or max_new tokens were generated. With
        `compact_done`, a done study's rows leave the KV cache and the decoder batch (see the class docstring).
        """
        batch, nb = embeds.shape[0], num_beams
        width = 2 * nb   # enough candidates that num_beams of them continue even if num_beams end in EOS
        length_penalty = self.gen.length_penalty
        # The beams of a study share its prompt: run the prompt once and copy its cache (rows b·nb … b·nb+nb-1).
        logits, past = self.step(embeds, mask, prompt_positions(mask), self.empty_past(batch))
        logits = np.repeat(logits[:, -1], nb, axis=0)                           # (B·nb, V)
        past = [np.repeat(p, nb, axis=0) for p in past]
        mask = np.repeat(mask, nb, axis=0)
        seqs = np.zeros((batch, nb, 0), np.int64)
        scores = np.full((batch, nb), _DEAD_SCORE, np.float32)
        scores[:, 0] = 0.0    # only the first copy is live at step 0, so the beams do not start identical
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        study = np.arange(batch)          # active row-group j holds the study study[j]
        last_seqs: list[list[int] | None] = [None] * batch
        for step in range(max_new):
            active = study.size
            log_probs = self.process_scores(seqs.reshape(active * nb, step), log_softmax(logits.astype(np.float32)),
                                            min_new)
            vocab = log_probs.shape[-1]
            totals = (log_probs.reshape(active, nb, vocab) + scores[:, :, None]).reshape(active, nb * vocab)
            top = top_k_stable(totals, width)                                        # (A, 2·nb), best first
            top_scores = np.take_along_axis(totals, top, axis=1)
            src_beam, token = top // vocab, top % vocab
            last = step + 1 == max_new
            keep_src = np.zeros((active, nb), np.int64)
            keep_tok = np.full((active, nb), self.pad, np.int64)
            keep_scores = np.full((active, nb), _DEAD_SCORE, np.float32)
            for j, b in enumerate(study.tolist()):
                full = len(finished[b]) >= nb      # decided before this step's candidates, as in transformers
                kept = 0
                for rank in range(width):
                    beam, tok, score = int(src_beam[j, rank]), int(token[j, rank]), float(top_scores[j, rank])
                    if tok == self.eos or last:
                        if rank < nb and not full:
                            hyp = seqs[j, beam].tolist() + [tok]
                            finished[b].append((score / len(hyp) ** length_penalty, hyp))
                    elif kept < nb:
                        keep_src[j, kept], keep_tok[j, kept], keep_scores[j, kept] = beam, tok, score
                        kept += 1
                finished[b] = sorted(finished[b], key=lambda h: -h[0])[:nb]
                last_seqs[b] = seqs[j, 0].tolist()
            alive = np.array([len(finished[b]) < nb for b in study.tolist()])
            if last or not alive.any():
                break
            if not self.compact_done:
                alive[:] = True
            # Drop the studies that are done, reorder the cache to the surviving beams and feed their new tokens.
            keep_src, keep_tok, keep_scores = keep_src[alive], keep_tok[alive], keep_scores[alive]
            groups = np.flatnonzero(alive)
            rows = (groups[:, None] * nb + keep_src).reshape(-1)
            past = self.reorder_cache(past, rows)
            seqs = np.concatenate([np.take_along_axis(seqs[alive], keep_src[:, :, None], axis=1),
                                   keep_tok[:, :, None]], 2)
            scores, study = keep_scores, study[alive]
            mask = np.concatenate([mask[rows], np.ones((rows.size, 1), mask.dtype)], axis=1)
            flat_tokens = keep_tok.reshape(-1)
            logits, past = self.step(self.embed[flat_tokens][:, None], mask, mask.sum(1, keepdims=True) - 1, past)
            logits = logits[:, -1]
        return [f[0][1] if f else last_seqs[b] for b, f in enumerate(finished)]
