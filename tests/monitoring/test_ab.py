"""A/B assignment (sticky, 10 % ± 1 % over 10,000 UIDs), the A/B decision rules, sample sizes, and the shadow
comparison on the same studies from a real prediction log (SQLite)."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.chexpert import LABEL_INDEX
from model_core.config import RolloutConfig
from model_core.prediction_log import FeedbackRecord, PredictionLog, PredictionRecord, study_hash, utc_now
from monitoring.ab import ArmData, ab_sample_sizes, analyze_ab, analyze_shadow, arm_data, assign_arm

CFG = RolloutConfig()
UIDS = [f"1.2.840.113619.2.55.3.{i}" for i in range(10_000)]


def test_assignment_is_sticky_and_puts_ten_percent_on_the_challenger():
    arms = [assign_arm(uid, "exp-1", 0.10) for uid in UIDS]
    share = arms.count("challenger") / len(arms)
    assert 0.09 <= share <= 0.11
    assert arms == [assign_arm(uid, "exp-1", 0.10) for uid in UIDS]            # sticky
    other = [assign_arm(uid, "exp-2", 0.10) for uid in UIDS]                  # a new salt re-randomises
    assert 0.09 <= other.count("challenger") / len(other) <= 0.11 and other != arms
    assert {assign_arm(u, "exp-1", 0.0) for u in UIDS[:100]} == {"champion"}
    with pytest.raises(ValueError, match="share"):
        assign_arm(UIDS[0], "exp-1", 1.5)


def _arm(rng, n, rating, edits, turnaround, detected, positives) -> ArmData:
    return ArmData(ratings=list(np.clip(rng.normal(rating, 0.8, n).round(), 1, 5)),
                   edit_distances=list(rng.poisson(edits, n).astype(float)),
                   turnaround_ms=list(rng.normal(turnaround, 300, n)), critical_detected=detected,
                   critical_positives=positives)


def test_a_better_challenger_is_promoted_and_a_less_sensitive_one_is_not():
    rng = np.random.default_rng(7)
    champion = _arm(rng, 900, 3.5, 9.0, 2000, 95, 100)
    better = _arm(rng, 100, 4.2, 5.0, 1900, 20, 20)
    out = analyze_ab(champion, better, CFG)
    assert out["decision"] == "promote", out["reasons"]
    assert out["tests"]["rating"]["test"] == "Welch t"
    assert out["tests"]["critical sensitivity"]["test"] == "Fisher exact"
    assert out["bonferroni"]["rating"]["p_adjusted"] == pytest.approx(min(1.0, 4 * out["tests"]["rating"]["p_value"]))
    less_sensitive = _arm(rng, 100, 4.2, 5.0, 1900, 15, 20)
    out = analyze_ab(champion, less_sensitive, CFG)
    assert out["decision"] == "keep champion"
    assert any("safety metric" in r for r in out["reasons"])


def test_no_significant_difference_keeps_the_champion():
    rng = np.random.default_rng(8)
    out = analyze_ab(_arm(rng, 900, 3.5, 9.0, 2000, 95, 100), _arm(rng, 100, 3.5, 9.0, 2000, 19, 20), CFG)
    assert out["decision"] == "keep champion" and "no metric better" in out["reasons"][0]


def test_sample_sizes_are_given_per_metric_and_rare_findings_need_many_studies():
    sizes = ab_sample_sizes(CFG, {"rating": 0.9, "edit distance": 6.0, "turnaround ms": 800.0},
                            sensitivity=0.95, critical_prevalence=0.04)
    assert set(sizes) == {"rating", "edit distance", "turnaround ms", "critical sensitivity"}
    sens = sizes["critical sensitivity"]
    assert sens["unit"] == "validated critical positives" and sens["studies_b"] == int(np.ceil(sens["n_b"] / 0.04))
    assert sens["studies_a"] > 10 * sizes["rating"]["n_a"]          # rare positives: the slow metric
    assert sizes["rating"]["n_b"] < sizes["rating"]["n_a"]          # 10 % arm


def _record(uid, role, version, labels, latency, i):
    return PredictionRecord(study_hash=study_hash(uid), created_at=utc_now(), model_name="rrg",
                            model_version=version, role=role, report_id=f"{role}-{i}", embedding=np.ones(4),
                            probabilities=[0.1] * 14, text_labels=labels, review_required=False, review_reasons=[],
                            latency_ms=latency, acquisition={})


def test_shadow_pairs_are_compared_on_the_same_studies_and_a_worse_shadow_is_withdrawn(tmp_path):
    log = PredictionLog(str(tmp_path / "log.sqlite3"))
    effusion = LABEL_INDEX["Pleural Effusion"]
    for i in range(40):
        uid = f"1.2.3.{i}"
        truth = [0] * 14
        truth[effusion] = int(i % 2 == 0)
        missed = [0] * 14                                    # the shadow misses every effusion
        log.append(_record(uid, "champion", "1", truth, 900.0 + i, i))
        log.append(_record(uid, "shadow", "2", missed, 950.0 + i, i))
        log.add_feedback(FeedbackRecord(report_id=f"champion-{i}", created_at=utc_now(), rating=4, outcome="accepted",
                                        edit_distance=0, final_labels=truth, final_text_sha256="0" * 64))
    out = analyze_shadow(log, "1", "2", CFG)
    assert out["pairs"] == 40 and out["validated_pairs"] == 40
    mc = out["tests"]["critical correctness"]
    assert (mc["a_only"], mc["b_only"]) == (20, 0) and out["decision"] == "withdraw"
    turnaround = out["tests"]["turnaround ms"]
    assert turnaround["test"] == "paired t" and turnaround["mean_difference"] == 50
    champion = arm_data(log, "champion", "1")
    assert champion.studies == 40 and champion.critical_positives == 20 and champion.critical_detected == 20
    log.close()
