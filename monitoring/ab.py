"""A/B test and shadow comparison of a challenger against the champion, from the prediction log.

Assignment: `model_core.evaluation.comparison.ab_arm` (serving routes with it): a study goes to the challenger when
SHA-256(salt ":" study UID), read as a number in [0, 1), falls below the share — deterministic and sticky (the
same study always lands in the same arm for one experiment), uniform, and a new salt is a new randomisation.
The arm is the prediction log's `role` (champion | challenger; shadow for mirrored runs).

Statistics (model_core.evaluation.comparison):
- A/B arms hold different patients: unpaired tests. Radiologist rating (1–5, higher better), word edit distance
  (lower better), turnaround (lower better): Welch t. Critical-finding sensitivity on validated studies (higher
  better; the safety metric): Fisher exact (rare positives), two-proportion z beside it. Bonferroni across the four.
  Decision "promote" only when some metric improves at Bonferroni-adjusted p < promote_alpha in its right
  direction and no metric is significantly worse and the safety metric is not lower; otherwise "keep champion".
- Shadow pairs are the same studies: paired tests (exact McNemar on critical-finding correctness against the
  radiologist's signed labels; paired t-test on turnaround).
The sample size each metric needs is computed before the test (`ab_sample_sizes`) and printed by `rrg rollout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model_core.chexpert import CRITICAL_FINDINGS, LABEL_INDEX
from model_core.config import RolloutConfig
from model_core.evaluation.comparison import (
    ab_arm,
    bonferroni,
    fisher_exact_test,
    mcnemar_exact,
    paired_t_test,
    sample_size_paired,
    sample_size_two_means,
    sample_size_two_proportions,
    two_proportion_z_test,
    welch_t_test,
)
from model_core.prediction_log import PredictionLog

CHAMPION_ARM, CHALLENGER_ARM, SHADOW_ARM = "champion", "challenger", "shadow"
# metric → (higher is better, is a safety metric)
AB_METRICS = {"rating": (True, False), "edit distance": (False, False), "turnaround ms": (False, False),
              "critical sensitivity": (True, True)}
_CRITICAL = [LABEL_INDEX[name] for name in CRITICAL_FINDINGS]


def assign_arm(study_uid: str, salt: str, share: float) -> str:
    """The study's arm: `model_core.evaluation.comparison.ab_arm` (the one serving routes with)."""
    return ab_arm(study_uid, salt, share)


@dataclass
class ArmData:
    """Per-study figures of one arm (different studies per arm)."""
    ratings: list[float] = field(default_factory=list)
    edit_distances: list[float] = field(default_factory=list)
    turnaround_ms: list[float] = field(default_factory=list)
    critical_detected: int = 0          # validated critical positives the draft stated
    critical_positives: int = 0         # validated critical positives (radiologist's signed labels)

    @property
    def studies(self) -> int:
        return len(self.turnaround_ms)


def arm_data(log: PredictionLog, role: str, model_version: str, since=None, until=None) -> ArmData:
    """One arm's figures from the prediction log: turnaround of every report, rating / edit distance /
    critical-finding sensitivity of the validated ones (the radiologist's signed labels are the truth)."""
    out = ArmData()
    for record in log.predictions(since=since, until=until, model_version=model_version, role=role):
        out.turnaround_ms.append(record.latency_ms)
    for record, feedback in log.validated(since=since):
        if record.role != role or record.model_version != model_version:
            continue
        out.ratings.append(float(feedback.rating))
        out.edit_distances.append(float(feedback.edit_distance))
        for k in _CRITICAL:
            if feedback.final_labels[k] != 0:
                out.critical_positives += 1
                out.critical_detected += int(record.text_labels[k] != 0)
    return out


def ab_sample_sizes(cfg: RolloutConfig, sd: dict[str, float], sensitivity: float, critical_prevalence: float
                    ) -> dict[str, dict]:
    """Studies each metric needs (per arm) for the configured effect and power at the Bonferroni-adjusted
    promote_alpha, with `ab_share` of studies on the challenger. sd: {"rating", "edit distance",
    "turnaround ms"} from the champion's own log; the sensitivity one is in POSITIVES, turned into studies by the
    prevalence of critical findings — rare findings make a 10 % A/B slow, and the figure says how slow."""
    alpha = cfg.promote_alpha / len(AB_METRICS)
    ratio = cfg.ab_share / (1 - cfg.ab_share) if cfg.ab_share < 1 else 1.0
    effects = {"rating": cfg.effect_rating, "edit distance": cfg.effect_edit_distance,
               "turnaround ms": cfg.effect_turnaround_ms}
    out = {name: {**sample_size_two_means(effects[name], sd[name], alpha, cfg.power, ratio), "unit": "studies"}
           for name in effects}
    target = max(sensitivity - cfg.effect_sensitivity, 0.0)
    positives = sample_size_two_proportions(sensitivity, target, alpha, cfg.power, ratio)
    studies = {k: int(np.ceil(positives[k] / critical_prevalence)) for k in ("n_a", "n_b")}
    out["critical sensitivity"] = {**positives, "unit": "validated critical positives",
                                   "studies_a": studies["n_a"], "studies_b": studies["n_b"]}
    return out


def analyze_ab(champion: ArmData, challenger: ArmData, cfg: RolloutConfig) -> dict:
    """The A/B decision: unpaired tests per metric, Bonferroni, promote only when better at p < promote_alpha
    in the right direction with no metric significantly worse and the safety metric not lower."""
    tests: dict[str, dict | None] = {}
    for name, a, b in (("rating", champion.ratings, challenger.ratings),
                       ("edit distance", champion.edit_distances, challenger.edit_distances),
                       ("turnaround ms", champion.turnaround_ms, challenger.turnaround_ms)):
        tests[name] = welch_t_test(a, b) if len(a) >= 2 and len(b) >= 2 else None
    if champion.critical_positives and challenger.critical_positives:
        counts = (champion.critical_detected, champion.critical_positives, challenger.critical_detected,
                  challenger.critical_positives)
        tests["critical sensitivity"] = {**fisher_exact_test(*counts), "z_test": two_proportion_z_test(*counts)}
    else:
        tests["critical sensitivity"] = None
    adjusted = bonferroni({k: (t["p_value"] if t else None) for k, t in tests.items()}, cfg.promote_alpha)
    better, worse, reasons = [], [], []
    for name, (higher_better, safety) in AB_METRICS.items():
        t = tests[name]
        if t is None:
            reasons.append(f"{name}: not enough data in one arm")
            continue
        delta = t.get("mean_difference", t.get("difference"))
        improves = delta > 0 if higher_better else delta < 0
        if adjusted[name]["rejects"]:
            (better if improves else worse).append(name)
        if safety and not improves and delta != 0:
            if name not in worse:
                worse.append(name)
            reasons.append(f"{name}: challenger lower ({t['rate_b']:.3f} vs {t['rate_a']:.3f}); a safety "
                           "metric must not be worse")
    if better and not worse and tests["critical sensitivity"] is not None:
        decision = "promote"
        reasons.insert(0, f"better at Bonferroni-adjusted p < {cfg.promote_alpha:g}: {', '.join(better)}")
    else:
        decision = "keep champion"
        if worse:
            reasons.insert(0, f"worse: {', '.join(dict.fromkeys(worse))}")
        elif not better:
            reasons.insert(0, f"no metric better at Bonferroni-adjusted p < {cfg.promote_alpha:g}")
        if tests["critical sensitivity"] is None:
            reasons.append("critical-finding sensitivity unmeasured (no validated positives in an arm): "
                           "promotion needs it")
    return {"decision": decision, "reasons": reasons, "tests": tests, "bonferroni": adjusted,
            "arms": {CHAMPION_ARM: _arm_summary(champion), CHALLENGER_ARM: _arm_summary(challenger)}}


def _arm_summary(arm: ArmData) -> dict:
    def mean(values):
        return float(np.mean(values)) if values else None
    return {"studies": arm.studies, "validated": len(arm.ratings), "rating": mean(arm.ratings),
            "edit distance": mean(arm.edit_distances), "turnaround ms": mean(arm.turnaround_ms),
            "critical sensitivity": (arm.critical_detected / arm.critical_positives
                                     if arm.critical_positives else None),
            "critical positives": arm.critical_positives}


def analyze_shadow(log: PredictionLog, champion_version: str, shadow_version: str, cfg: RolloutConfig,
                   since=None, until=None) -> dict:
    """The shadow window's comparison on the SAME studies (paired): both models' records joined by study hash;
    critical-finding correctness against the radiologist's signed labels (validated studies) by exact McNemar,
    turnaround by paired t-test. Decision "withdraw" when the shadow is worse on correctness at mcnemar_alpha,
    "wait" without a validated pair, else "advance" (to the A/B test)."""
    champion = {r.study_hash: r for r in log.predictions(since=since, until=until, model_version=champion_version,
                                                         role=CHAMPION_ARM)}
    shadow = {r.study_hash: r for r in log.predictions(since=since, until=until, model_version=shadow_version,
                                                       role=SHADOW_ARM)}
    pairs = sorted(champion.keys() & shadow.keys())
    signed: dict[str, list[int]] = {}
    for record, feedback in log.validated(since=since):
        if record.role == CHAMPION_ARM and record.study_hash in shadow:
            signed[record.study_hash] = feedback.final_labels
    validated = [h for h in pairs if h in signed]
    out = {"pairs": len(pairs), "validated_pairs": len(validated), "tests": {}}
    if len(pairs) >= 2:
        out["tests"]["turnaround ms"] = paired_t_test([champion[h].latency_ms for h in pairs],
                                                      [shadow[h].latency_ms for h in pairs])
    if not validated:
        return {**out, "decision": "wait", "reasons": ["no validated study has both models' drafts yet"]}

    def correct(records: dict) -> np.ndarray:
        return np.array([all((records[h].text_labels[k] != 0) == (signed[h][k] != 0) for k in _CRITICAL)
                         for h in validated])

    mc = mcnemar_exact(correct(champion), correct(shadow))
    out["tests"]["critical correctness"] = mc
    # a safety check: worse at the (less strict) mcnemar_alpha is enough to withdraw
    worse = mc["p_value"] < cfg.mcnemar_alpha and mc["b_only"] < mc["a_only"]
    sd = np.std(correct(shadow).astype(float) - correct(champion).astype(float), ddof=1) if len(validated) > 1 else 0
    out["pairs_needed"] = (sample_size_paired(cfg.effect_sensitivity, float(sd), cfg.promote_alpha, cfg.power)
                           if sd > 0 else None)
    if worse:
        return {**out, "decision": "withdraw", "reasons": [
            f"shadow worse on critical-finding correctness ({mc['accuracy_b']:.3f} vs {mc['accuracy_a']:.3f}, "
            f"McNemar p = {mc['p_value']:.3g})"]}
    return {**out, "decision": "advance", "reasons": [
        f"shadow not significantly worse on critical-finding correctness ({mc['accuracy_b']:.3f} vs "
        f"{mc['accuracy_a']:.3f}, "
        f"McNemar p = {mc['p_value']:.3g}, {len(validated)} validated pairs)"]}
