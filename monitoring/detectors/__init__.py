"""Drift detectors behind one interface (`base.DriftDetector`: `prepare(reference)` then `predict(sample)`).

mmd.py: data drift on embeddings (alibi-detect, BSL 1.1: the only file that imports it); labels.py: label drift
(two-proportion tests, Bonferroni) and a Bernoulli CUSUM; concept.py: per-finding F1 on validated studies.
"""
