"""Human-readable drift reports: the drift check's HTML page, and Evidently's tabular drift report.

`render_drift_html(result)` renders drift.json as one self-contained page (figures and finding names only).
`tabular_drift_report(reference, current, out_html)` runs Evidently's DataDriftPreset over per-finding probabilities
(and acquisition metadata where both sides have it) and saves its HTML; Evidently is imported there, with
DO_NOT_TRACK=1 set first so it sends no usage telemetry.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from model_core.chexpert import CHEXPERT_LABELS


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def render_drift_html(result: dict) -> str:
    esc = html.escape
    status = result["status"]
    colour = {"drift": "#b00020", "ok": "#1b5e20"}.get(status, "#8a6d00")
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_fmt(result.get(k))}</td></tr>" for k in (
        "method", "p_value", "distance", "threshold", "alpha", "permutations", "n_reference", "n_current",
        "min_studies"))
    label = result["label_drift"]
    findings = label.get("details", {}).get("findings", {})
    label_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{f['reference_rate']:.3f}</td><td>{f['current_rate']:.3f}</td>"
        f"<td>{f['z']:.2f}</td><td>{f['p_value']:.3g}</td><td>{'drift' if f['drift'] else ''}</td></tr>"
        for name, f in findings.items())
    cusum = result["cusum"]
    cd = cusum.get("details", {})
    window, ref = result["window"], result["model"]["reference"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Drift report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}</style></head><body>
<h1>Drift report: <span style="color:{colour}">{esc(status)}</span></h1>
<p>Window: {esc(str(window.get("source")))}; {window.get("studies")} studies
({_fmt(window.get("first"))} – {_fmt(window.get("last"))}). Reference: {_fmt(ref.get("source"))},
{_fmt(ref.get("n_reference"))} studies, embeddings reduced by PCA to {_fmt(ref.get("pca_components"))} dimensions
(fitted on {_fmt(ref.get("n_fit"))} other studies).</p>
<h2>Data drift (MMD² permutation test on study embeddings)</h2><table>{rows}</table>
<p>Drift when p &lt; alpha; the p-value counts the observed statistic ((1 + #permuted ≥ observed) / (1 + B)).</p>
<h2>Label drift (predicted prevalence, two-proportion z-tests, Bonferroni over 14 findings):
{esc(label["status"])}</h2>
<table><tr><th>finding</th><th>reference</th><th>window</th><th>z</th><th>p</th><th></th></tr>{label_rows}</table>
<h2>CUSUM on the {esc(str(cd.get("finding", "")))} rate: {esc(cusum["status"])}</h2>
<p>Reference rate {_fmt(cd.get("p0"))}, window rate {_fmt(cd.get("current_rate"))}; rate ratio
{_fmt(cd.get("rate_ratio"))}, threshold h = {_fmt(cusum.get("threshold"))}; max statistic {_fmt(cusum.get("distance"))};
alarms {esc(str(cd.get("alarms", {})))}.</p>
</body></html>
"""


def probability_frame(probabilities: np.ndarray, acquisition: list[dict] | None = None,
                      columns: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(probabilities, dtype=np.float64), columns=[f"p_{n}" for n in CHEXPERT_LABELS])
    for key in columns:
        frame[key] = [str((a or {}).get(key)) for a in (acquisition or [{}] * len(frame))]
    return frame


def tabular_drift_report(reference: pd.DataFrame, current: pd.DataFrame, out_html: str | os.PathLike) -> dict:
    """Evidently DataDriftPreset of current vs reference (same columns); saves the HTML and returns
    {columns: {name: p-value or distance}, drifted_share}."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Evidently is heavy (plotly, litestar): imported here, where a report is actually rendered.
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    Path(out_html).parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out_html))
    summary = {"columns": {}, "drifted_share": None}
    for metric in snapshot.dict().get("metrics", []):
        config, value = metric.get("config", {}), metric.get("value")
        if config.get("type", "").endswith("ValueDrift"):
            summary["columns"][config.get("column")] = {"method": config.get("method"), "value": value}
        elif config.get("type", "").endswith("DriftedColumnsCount") and isinstance(value, dict):
            summary["drifted_share"] = value.get("share")
    return summary
