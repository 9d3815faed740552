"""Torch vs ONNX Runtime figures of the tiny model's export, on test-split studies of the data config."""

import numpy as np


def test_fp32_parity_with_torch(exported):
    parity = exported[2]["parity"]
    assert parity["studies"] == "test split of the data config" and parity["n_studies"] == 2
    assert parity["vision_visual_tokens_max_abs_diff"] < 1e-4
    assert parity["vision_label_logits_max_abs_diff"] < 1e-4
    assert parity["fp32"]["prompt_logits_max_abs_diff"] < 1e-4
    assert parity["fp32"]["first_step_logits_max_abs_diff"] < 1e-4
    assert parity["fp32"]["greedy_texts_identical"]
    # The numpy beam search follows transformers' candidate rules, so it finds the same texts.
    assert parity["fp32"]["beam_texts_identical"]
    assert parity["fp32_ok"]
    assert np.isfinite(parity["int8"]["first_step_logits_max_abs_diff"])
    for search in ("greedy", "beam"):   # a share of the 2 studies, and "identical" exactly when it is all of them
        share = parity["int8"][f"{search}_identical_share"]
        assert share * parity["n_studies"] in (0, 1, 2)
        assert parity["int8"][f"{search}_texts_identical"] is (share == 1.0)
