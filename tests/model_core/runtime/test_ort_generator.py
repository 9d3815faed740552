"""The ONNX Runtime generator on the tiny model's export: texts equal torch's (FP32) and the plain reference
search's (tests/reference_decoding.py), whatever the batch, the settings and the compaction of done studies."""

from dataclasses import replace

import numpy as np
import onnxruntime
import pytest
import torch
from reference_decoding import ReferenceOrtGenerator
from tiny_exports import CONTEXTS, GEN

from model_core.config import GenerationConfig
from model_core.modeling.generation import generate_texts
from model_core.runtime.ort_generator import OrtReportGenerator
from model_core.runtime.session import ExportError


def test_multiview_batch_matches_torch(exported, torch_model):
    """Two views per study, left-padded prompts of different lengths, the XX ban: greedy and beam."""
    torch.manual_seed(1)
    images = torch.rand(2, 2, 1, 32, 32)
    engine = OrtReportGenerator(exported[1], gen=GEN)
    for beams in (1, 3):
        ref_texts, ref_logits = generate_texts(torch_model, images, CONTEXTS, GenerationConfig(
            num_beams=beams, max_new_tokens=GEN.max_new_tokens))
        texts, logits = engine.generate(images.numpy(), CONTEXTS, num_beams=beams)
        assert texts == ref_texts
        assert np.abs(logits - ref_logits.numpy()).max() < 1e-4
        assert all("XX" not in t for t in texts)


def test_a_missing_view_matches_torch_and_a_short_study_is_padded(exported, torch_model):
    """A study without its lateral view: NaN in that slot, or only the frontal given (K = 1 < V = 2)."""
    torch.manual_seed(2)
    images = torch.rand(2, 2, 1, 32, 32)
    images[1, 1] = float("nan")
    engine = OrtReportGenerator(exported[1], gen=GEN)
    ref_texts, ref_logits = generate_texts(torch_model, images, CONTEXTS, GEN)
    texts, logits = engine.generate(images.numpy(), CONTEXTS)
    assert texts == ref_texts and np.abs(logits - ref_logits.numpy()).max() < 1e-4
    short_tokens, short_logits = engine.encode_images(images[1:, :1].numpy())
    full_tokens, full_logits = engine.encode_images(images[1:].numpy())
    assert np.array_equal(short_tokens, full_tokens) and np.array_equal(short_logits, full_logits)
    n = engine.meta["num_image_tokens"]
    missing = torch_model.projector.missing_view.detach().numpy()
    assert np.allclose(full_tokens[0, n:], missing, atol=1e-6)   # the masked slot reads the learned vector


def test_int8_decoder_runs(exported):
    engine = OrtReportGenerator(exported[1], precision="int8", gen=GEN)
    images = np.random.default_rng(0).random((2, 1, 1, 32, 32), dtype=np.float32)
    for beams in (1, 2):
        texts, logits = engine.generate(images, CONTEXTS, num_beams=beams)
        # the per-call num_beams decodes as an engine configured with it does (INT8 vs the reference search:
        # test_the_search_is_token_identical_to_the_reference_search[int8])
        configured = OrtReportGenerator(exported[1], precision="int8", gen=replace(GEN, num_beams=beams))
        want, want_logits = configured.generate(images, CONTEXTS)
        assert texts == want and all(t.strip() for t in texts) and logits.shape == (2, 14)
        np.testing.assert_array_equal(logits, want_logits)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_search_is_token_identical_to_the_reference_search(exported, precision):
    """Vectorised processors, partial stable top-k, in-place cache reorder and compaction change no token."""
    images = np.random.default_rng(2).random((5, 1, 1, 32, 32), dtype=np.float32)
    contexts = [{"age": 70}, None, {"indication": "cough"}, None, {"sex": "F"}]
    for beams, new in ((1, 20), (3, 30), (4, 40)):
        gen = GenerationConfig(num_beams=beams, max_new_tokens=new, no_repeat_ngram_size=2 + beams % 2,
                               repetition_penalty=1.2 if beams == 3 else 1.0)
        want, want_logits = ReferenceOrtGenerator(exported[1], precision, gen=gen).generate(images, contexts)
        engine = OrtReportGenerator(exported[1], precision, gen=gen)
        for compact in (True, False):
            engine.compact_done = compact
            got, logits = engine.generate(images, contexts)
            assert got == want, (beams, compact, got, want)
            np.testing.assert_array_equal(logits, want_logits)


class _EarlyStopping(OrtReportGenerator):
    """Study i of a batch ends after about 2 + 3·i tokens (EOS becomes near-certain), so the studies of a batch
    end at different lengths; `rows` records how many rows each decoder call ran."""

    def process_scores(self, tokens, scores, min_new=0):
        scores = super().process_scores(tokens, scores, min_new)
        if tokens.shape[1] == 0:
            self.study = np.arange(scores.shape[0]) // self.gen.num_beams   # rows b·nb … b·nb+nb-1: study b
        scores[tokens.shape[1] >= 2 + 3 * self.study, self.eos] = 0.0
        return scores

    def reorder_cache(self, past, rows):
        self.study = self.study[rows]
        return super().reorder_cache(past, rows)

    def step(self, embeds, mask, positions, past):
        self.rows.append(embeds.shape[0])
        return super().step(embeds, mask, positions, past)


def test_done_studies_leave_the_batch_without_changing_any_text(exported):
    engine = _EarlyStopping(exported[1], gen=GenerationConfig(num_beams=3, max_new_tokens=24))
    images = np.random.default_rng(3).random((5, 1, 1, 32, 32), dtype=np.float32)
    results = {}
    for compact in (False, True):
        engine.compact_done, engine.rows = compact, []
        results[compact] = (engine.generate(images)[0], engine.rows)
    (kept, kept_rows), (compacted, compacted_rows) = results[False], results[True]
    assert compacted == kept
    lengths = [len(engine.tokenizer(t)["input_ids"]) for t in kept]
    assert len(set(lengths)) > 1, "the studies should end at different lengths for this test to mean anything"
    # Without compaction every step runs 5 studies × 3 beams; with it, the rows shrink as studies finish.
    assert set(kept_rows[1:]) == {15}
    assert compacted_rows[1] == 15 and compacted_rows[-1] < 15 and all(r % 3 == 0 for r in compacted_rows[1:])
    assert sum(compacted_rows) < sum(kept_rows)


class _EosFirst(OrtReportGenerator):
    """EOS is every step's best token, before the processors run: only min_new_tokens can keep a search going."""

    def process_scores(self, tokens, scores, min_new=0):
        scores = scores.copy()
        scores[:, self.eos] = 1e4
        return super().process_scores(tokens, scores, min_new)


def test_min_new_tokens_defer_eos_and_match_transformers(exported, torch_model):
    torch.manual_seed(4)
    images = torch.rand(2, 2, 1, 32, 32)
    for beams in (1, 3):
        gen = GenerationConfig(num_beams=beams, max_new_tokens=14, min_new_tokens=9)
        want, _ = generate_texts(torch_model, images, CONTEXTS, gen)
        got, _ = OrtReportGenerator(exported[1], gen=gen).generate(images.numpy(), CONTEXTS)
        assert got == want
    engine = _EosFirst(exported[1], gen=GEN)
    visual, logits = engine.encode_images(images.numpy())
    embeds, mask = engine.prompt(visual, 2, CONTEXTS, None, logits)
    for min_new, want_length in ((0, 1), (7, 8)):
        assert [len(t) for t in engine._greedy(embeds, mask, 12, min_new)] == [want_length] * 2
        assert [len(t) for t in engine._beam_search(embeds, mask, 12, 3, min_new)] == [want_length] * 2


def test_compaction_is_the_default_and_an_option(exported):
    assert OrtReportGenerator(exported[1], gen=GEN).compact_done
    assert not OrtReportGenerator(exported[1], gen=GEN, compact_done=False).compact_done


def test_generator_rejects_bad_input(exported, tmp_path):
    engine = OrtReportGenerator(exported[1], gen=GEN)
    with pytest.raises(ValueError, match="32×32"):
        engine.generate(np.zeros((1, 1, 1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="single-channel"):
        engine.generate(np.zeros((1, 1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="clinical contexts"):
        engine.generate(np.zeros((2, 1, 1, 32, 32), np.float32), [None])
    with pytest.raises(ValueError, match="at most 2 view"):
        engine.generate(np.zeros((1, 3, 1, 32, 32), np.float32))
    partly = np.zeros((1, 2, 1, 32, 32), np.float32)
    partly[0, 1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite pixels"):
        engine.generate(partly)
    with pytest.raises(ValueError, match="has no image"):
        engine.generate(np.full((1, 2, 1, 32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="precision"):
        OrtReportGenerator(exported[1], precision="fp8")
    with pytest.raises(ExportError, match="not an export directory"):
        OrtReportGenerator(tmp_path)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match="not available"):
            OrtReportGenerator(exported[1], provider="CUDAExecutionProvider")
        assert OrtReportGenerator(exported[1], provider="auto").provider == "CPUExecutionProvider"
