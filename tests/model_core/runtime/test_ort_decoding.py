"""The vectorised pieces of the search equal their plain per-row versions (tests/reference_decoding.py)."""

import numpy as np
import pytest
from reference_decoding import ReferenceOrtGenerator, ngram_bans

from model_core.config import GenerationConfig
from model_core.runtime.decoding import apply_logits_processors, no_repeat_ngram_mask, prompt_positions, top_k_stable


@pytest.mark.parametrize("k", [1, 3, 8, 40, 50])
def test_top_k_stable_is_the_stable_sort_prefix(k):
    rng = np.random.default_rng(k)
    values = rng.integers(-5, 5, (6, 40)).astype(np.float32)     # many ties
    values[0] = 1.0                                             # one row of nothing but ties
    values[1, :7] = -np.inf
    np.testing.assert_array_equal(top_k_stable(values, k), np.argsort(-values, axis=1, kind="stable")[:, :k])


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_no_repeat_ngram_mask_matches_the_per_row_rule(n):
    tokens = np.random.default_rng(n).integers(0, 4, (7, 12))
    for length in range(tokens.shape[1] + 1):
        rows, banned = no_repeat_ngram_mask(tokens[:, :length], n)
        got = [sorted(set(banned[rows == r].tolist())) for r in range(len(tokens))]
        assert got == [sorted(set(ngram_bans(row, n))) for row in tokens[:, :length].tolist()]


def test_logits_processors_match_the_per_row_reference(exported):
    reference = ReferenceOrtGenerator(exported[1], gen=GenerationConfig(num_beams=2, no_repeat_ngram_size=2,
                                                                       repetition_penalty=1.3))
    vocab = reference.model.embed.shape[0]
    reference.model.banned = np.array([3, 7, 11])     # (the tiny tokenizer has no XX token to ban)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, (5, 9))
    scores = rng.normal(size=(5, vocab)).astype(np.float32)
    got = apply_logits_processors(tokens, scores, 1.3, 2, reference.model.banned)
    np.testing.assert_array_equal(got, reference.process(tokens.tolist(), scores))
    assert np.isneginf(got[:, [3, 7, 11]]).all() and np.isneginf(got).sum() > 15    # n-gram bans too


def test_prompt_positions_count_real_tokens_from_zero():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(prompt_positions(mask), [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
