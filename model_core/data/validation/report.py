"""The data-validation result, its failure message and its JSON / HTML reports (what they show: the package docstring).

HTML report: rendered here, self-contained (inline CSS, no scripts). GE data docs do build
offline into a folder, but (a) their validation pages print the unexpected values, i.e. the report
text holding the suspected PHI, and (b) the pages load Bootstrap, jQuery, Vega and fonts from
public CDNs when opened, so they are not used.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model_core.data.manifest import DataError

REPORT_JSON = "data_validation.json"
REPORT_HTML = "data_validation.html"


class DataValidationError(DataError):
    """The data-validation gate failed; the message lists the failing checks and example rows."""


@dataclass
class ValidationResult:
    success: bool
    failures: list[dict]
    statistics: dict
    report_html: Path
    report_json: Path
    expectations: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        return failure_message(self) if not self.success else (
            f"data validation passed ({self.statistics.get('expectations_evaluated', 0)} expectations)")


def raise_on_failure(result: ValidationResult) -> ValidationResult:
    """Raise `DataValidationError` when the validation failed; return the result otherwise."""
    if not result.success:
        raise DataValidationError(failure_message(result))
    return result


def failure_message(result: ValidationResult) -> str:
    """One line per failed check: check id, expectation, column or frame, failing rows (CSV line, uid)."""
    lines = [f"data validation failed: {len(result.failures)} expectation(s) failed (report: {result.report_html})"]
    for f in result.failures:
        where = f"column '{f['column']}'" if f.get("column") else f"frame '{f['frame']}'"
        rows = ", ".join(example_str(e) for e in f["examples"][:5])
        more = f" (+{f['unexpected_count'] - 5} more)" if f["unexpected_count"] and f["unexpected_count"] > 5 else ""
        detail = f"; {f['unexpected_count']} row(s): {rows}{more}" if rows else ""
        err = f"; error: {f['exception']}" if f.get("exception") else ""
        lines.append(f"  - [{f['check']}] {f['expectation']} on {where}{detail}{err}")
    return "\n".join(lines)


def example_str(example: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in example.items())


def safe_value(v, limit: int = 24) -> str:
    """A bad value of an enumerated column, withheld when long (a shifted CSV can put report text there)."""
    text = str(plain_value(v))
    return text if len(text) <= limit else f"<{len(text)}-character value withheld>"


def plain_value(v):
    """numpy scalars -> Python numbers, NaN / pd.NA -> None (JSON-ready)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [plain_value(x) for x in v]
    if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    return v


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return plain_value(obj)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f3f3f3}.ok{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}
code{font-size:13px}"""


def render_html(result: ValidationResult) -> str:
    """The self-contained HTML report: statistics, failures with example rows, every expectation."""
    e = html.escape
    s = result.statistics
    status = '<span class="ok">PASSED</span>' if result.success else '<span class="bad">FAILED</span>'
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Data validation</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Data validation: {status}</h1>",
             f"<p>{s['expectations_evaluated']} expectations"
             f" (Great Expectations {e(str(s['great_expectations_version']))}),"
             f" {s['expectations_failed']} failed. Manifest <code>{e(s['manifest'])}</code>"
             f" (sha256 {e(s['manifest_sha256'][:16])}…), images root <code>{e(s['images_root'])}</code>.</p>"]
    img = s.get("images", {})
    parts.append("<h2>Statistics</h2><table>")
    rows = [("rows", s.get("rows")), ("studies", s.get("studies")), ("missing columns", s.get("columns_missing")),
            ("split source", s.get("splits_source")), ("splits", s.get("splits")),
            ("projections", s.get("projections")),
            ("images checked", f"{img.get('mode')}: {img.get('decoded')} of {img.get('rows')} rows decoded"
             + (f" (seed {img.get('sample_seed')})" if img.get("mode") == "sample" else "")),
            ("image sizes (w, h ranges)", f"{img.get('width')} × {img.get('height')}"),
            ("pixel std", img.get("pixel_std")), ("min image size", s.get("min_image_size")),
            ("elapsed (s)", s.get("elapsed_seconds"))]
    parts += [f"<tr><th>{e(k)}</th><td>{e(json.dumps(jsonable(v)))}</td></tr>" for k, v in rows]
    parts.append("</table>")
    if result.failures:
        parts.append("<h2>Failures</h2><table><tr><th>check</th><th>expectation</th><th>frame</th><th>column</th>"
                     "<th>failing rows</th><th>examples (CSV row, uid)</th><th>bad values</th></tr>")
        for f in result.failures:
            ex = "<br>".join(e(example_str(x)) for x in f["examples"])
            vals = e(", ".join(f.get("unexpected_values", [])))
            if f.get("exception"):
                vals += f"<br>error: {e(f['exception'])}"
            parts.append(f"<tr><td>{e(f['check'])}</td><td>{e(f['expectation'])}</td><td>{e(f['frame'])}</td>"
                         f"<td>{e(str(f['column'] or ''))}</td><td>{e(str(f['unexpected_count']))}</td>"
                         f"<td>{ex}</td><td>{vals}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>All expectations</h2><table><tr><th>result</th><th>check</th><th>expectation</th>"
                 "<th>frame</th><th>column</th><th>parameters</th></tr>")
    for c in result.expectations:
        mark = '<span class="ok">pass</span>' if c["success"] else '<span class="bad">FAIL</span>'
        params = {k: v for k, v in c["parameters"].items() if k != "regex"}
        parts.append(f"<tr><td>{mark}</td><td>{e(c['check'])}</td><td>{e(c['expectation'])}</td>"
                     f"<td>{e(c['frame'])}</td><td>{e(str(c['column'] or ''))}</td>"
                     f"<td>{e(json.dumps(jsonable(params)))}</td></tr>")
    parts.append("</table><p>Report text is never shown here; failures give CSV line numbers and study uids."
                 "</p></body></html>\n")
    return "".join(parts)
