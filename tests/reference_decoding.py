"""The test oracle of the ONNX Runtime search: plain greedy decoding and beam search over an export's graphs.

`ReferenceOrtGenerator(export_dir, precision, gen).generate(images, contexts)` → (texts, label_logits), like
`model_core.runtime.ort_generator.OrtReportGenerator`, written for obviousness, not speed: every logits processor
is a Python loop per row, the candidates come from a full stable sort of all num_beams·V continuations, the KV
cache is gathered by copy, and every study stays in the batch to the end (transformers' behaviour). The candidate
rules are those of transformers 4.57 `_beam_search` with early_stopping=True (see the runtime's docstring).

Only the model parts come from the runtime (sessions, prompt embeddings, one decoder call), so a test that
compares the two checks the search itself.
"""

from __future__ import annotations

import numpy as np

from model_core.runtime.ort_generator import OrtReportGenerator


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _positions(mask: np.ndarray) -> np.ndarray:
    pos = mask.cumsum(-1) - 1
    pos[mask == 0] = 1
    return pos.astype(np.int64)


def ngram_bans(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `tokens` (transformers' NoRepeatNGramLogitsProcessor)."""
    if n <= 0 or len(tokens) + 1 < n:
        return []
    prefix = tuple(tokens[len(tokens) - n + 1:])
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == prefix]


class ReferenceOrtGenerator:
    def __init__(self, export_dir, precision: str = "fp32", gen=None):
        self.model = OrtReportGenerator(export_dir, precision, gen=gen)
        self.gen = self.model.gen

    def process(self, tokens: list[list[int]], scores: np.ndarray) -> np.ndarray:
        """Repetition penalty, no-repeat n-gram, bad words: one row at a time."""
        scores = scores.copy()
        penalty = np.float32(self.gen.repetition_penalty)    # float32 arithmetic, as torch's processor does
        for row, seq in enumerate(tokens):
            if penalty != 1.0:
                for tok in set(seq):
                    s = scores[row, tok]
                    scores[row, tok] = s * penalty if s < 0 else s / penalty
            for tok in ngram_bans(seq, self.gen.no_repeat_ngram_size):
                scores[row, tok] = -np.inf
            for tok in self.model.banned.tolist():
                scores[row, tok] = -np.inf
        return scores

    def generate(self, images, contexts=None, num_beams: int | None = None) -> tuple[list[str], np.ndarray]:
        model = self.model
        images = model.check_images(images)
        contexts = contexts or [None] * len(images)
        visual_tokens, label_logits = model.encode_images(images)
        embeds, mask = model.prompt(visual_tokens, images.shape[1], contexts, label_logits=label_logits)
        max_new = min(self.gen.max_new_tokens, model.meta["max_positions"] - embeds.shape[1])
        num_beams = self.gen.num_beams if num_beams is None else num_beams
        if num_beams == 1:
            tokens = self.greedy(embeds, mask, max_new)
        else:
            tokens = self.beam_search(embeds, mask, max_new, num_beams)
        return model.finish_texts(tokens, label_logits), label_logits   # decoding + grounding: not the search

    def greedy(self, embeds, mask, max_new) -> list[list[int]]:
        model, batch = self.model, embeds.shape[0]
        logits, past = model.step(embeds, mask, _positions(mask), model.empty_past(batch))
        tokens: list[list[int]] = [[] for _ in range(batch)]
        done = [False] * batch
        for step in range(max_new):
            scores = self.process(tokens, logits[:, -1].astype(np.float32))
            nxt = [model.pad if done[b] else int(scores[b].argmax()) for b in range(batch)]
            for b in range(batch):
                tokens[b].append(nxt[b])
                done[b] = done[b] or nxt[b] == model.eos
            if all(done) or step + 1 == max_new:
                break
            mask = np.concatenate([mask, np.ones((batch, 1), mask.dtype)], axis=1)
            logits, past = model.step(model.embed[np.array(nxt)][:, None], mask, mask.sum(1, keepdims=True) - 1,
                                      past)
        return tokens

    def beam_search(self, embeds, mask, max_new, nb) -> list[list[int]]:
        model, batch = self.model, embeds.shape[0]
        logits, past = model.step(embeds, mask, _positions(mask), model.empty_past(batch))
        logits = np.repeat(logits[:, -1], nb, axis=0)
        past = [np.repeat(p, nb, axis=0) for p in past]
        mask = np.repeat(mask, nb, axis=0)
        seqs = [[[] for _ in range(nb)] for _ in range(batch)]
        scores = [[0.0] + [-1e9] * (nb - 1) for _ in range(batch)]
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        for step in range(max_new):
            flat_seqs = [seqs[b][k] for b in range(batch) for k in range(nb)]
            log_probs = self.process(flat_seqs, _log_softmax(logits.astype(np.float32)))
            vocab = log_probs.shape[-1]
            last = step + 1 == max_new
            rows, new_seqs, new_scores, new_tokens = [], [], [], []
            for b in range(batch):
                totals = np.concatenate([log_probs[b * nb + k] + np.float32(scores[b][k]) for k in range(nb)])
                order = np.argsort(-totals, kind="stable")[:2 * nb]
                full = len(finished[b]) >= nb
                kept: list[tuple[int, int, float]] = []
                for rank, index in enumerate(order.tolist()):
                    beam, tok, score = index // vocab, index % vocab, float(totals[index])
                    if tok == model.eos or last:
                        if rank < nb and not full:
                            hyp = seqs[b][beam] + [tok]
                            finished[b].append((score / len(hyp) ** self.gen.length_penalty, hyp))
                    elif len(kept) < nb:
                        kept.append((beam, tok, score))
                kept += [(0, model.pad, -1e9)] * (nb - len(kept))
                finished[b] = sorted(finished[b], key=lambda h: -h[0])[:nb]
                rows += [b * nb + beam for beam, _, _ in kept]
                new_seqs.append([seqs[b][beam] + [tok] for beam, tok, _ in kept])
                new_scores.append([score for _, _, score in kept])
                new_tokens += [tok for _, tok, _ in kept]
            if last or all(len(f) >= nb for f in finished):
                break
            seqs, scores = new_seqs, new_scores
            rows = np.array(rows)
            past = [p[rows].copy() for p in past]
            mask = np.concatenate([mask[rows], np.ones((rows.size, 1), mask.dtype)], axis=1)
            logits, past = model.step(model.embed[np.array(new_tokens)][:, None], mask,
                                      mask.sum(1, keepdims=True) - 1, past)
            logits = logits[:, -1]
        return [f[0][1] if f else seqs[b][0] for b, f in enumerate(finished)]
