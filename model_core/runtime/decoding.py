"""The numpy pieces of the ONNX Runtime search, each vectorised over the rows (beams) of a batch.

    log_softmax(x)                         the last axis
    prompt_positions(mask)                 position ids of a left-padded prompt, as transformers' generate makes them
    apply_logits_processors(tokens, scores, ...)  repetition penalty, no-repeat n-gram, banned tokens (that order)
    no_repeat_ngram_mask(tokens, n)        (rows, token ids) that would repeat an n-gram
    top_k_stable(values, k)                the k best per row, best first, ties by lower index

Each equals a plain per-row implementation (tests/reference_decoding.py, the oracle of the tests), only without
the Python loops over rows and positions that would grow with the batch.
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def prompt_positions(mask: np.ndarray) -> np.ndarray:
    """Position ids of a left-padded prompt, as transformers' generate makes them (padding gets 1, unused)."""
    pos = mask.cumsum(-1) - 1
    pos[mask == 0] = 1
    return pos.astype(np.int64)


def no_repeat_ngram_mask(tokens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, token ids) that would repeat an n-gram of `tokens` (R, t): transformers' NoRepeatNGramLogitsProcessor
    rule per row, vectorised over rows and positions."""
    rows_n, length = tokens.shape
    if n <= 0 or length + 1 < n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n == 1:
        return np.repeat(np.arange(rows_n), length), tokens.reshape(-1)
    starts = length - n + 1                                     # candidate n-gram starts i = 0 … t-n
    match = np.ones((rows_n, starts), bool)
    for k in range(n - 1):                                      # tokens[i + k] == the prefix's k-th token
        match &= tokens[:, k:k + starts] == tokens[:, length - n + 1 + k][:, None]
    rows, cols = np.nonzero(match)
    return rows, tokens[rows, cols + n - 1]


def apply_logits_processors(tokens: np.ndarray, scores: np.ndarray, repetition_penalty: float,
                            no_repeat_ngram_size: int, banned: np.ndarray) -> np.ndarray:
    """transformers' logits processors, in its order: repetition penalty, no-repeat n-gram, bad words.

    tokens: (R, t) generated so far (the prompt is embeddings only, so it takes no part); scores (R, V), not
    modified (a processed copy is returned); banned: token ids that are never generated.
    """
    scores = scores.copy()
    if repetition_penalty != 1.0 and tokens.shape[1]:
        picked = np.take_along_axis(scores, tokens, axis=1)
        np.put_along_axis(scores, tokens, np.where(picked < 0, picked * repetition_penalty,
                                                   picked / repetition_penalty), axis=1)
    rows, ngram_bans = no_repeat_ngram_mask(tokens, no_repeat_ngram_size)
    scores[rows, ngram_bans] = -np.inf
    if banned.size:
        scores[:, banned] = -np.inf
    return scores


def top_k_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, best first, ties by lower index: exactly
    `np.argsort(-values, axis=1, kind="stable")[:, :k]`, in O(N) per row instead of O(N log N)."""
    rows, n = values.shape
    if k >= n:
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    neg = -values
    out = np.empty((rows, k), np.int64)
    part = np.argpartition(neg, k - 1, axis=1)[:, :k]
    for r in range(rows):
        row = neg[r]
        cutoff = row[part[r]].max()                      # the k-th best value
        better = np.flatnonzero(row < cutoff)
        ties = np.flatnonzero(row == cutoff)[:k - better.size]
        chosen = np.concatenate([better, ties])
        out[r] = chosen[np.lexsort((chosen, row[chosen]))]
    return out
