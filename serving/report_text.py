"""The plain-text renderings of a stored report (GET /api/v1/reports/{id}/text, and the FHIR presentedForm)."""

from __future__ import annotations

DISCLAIMER = "AI-generated draft for radiologist review; not for autonomous diagnosis."


def render_text(record: dict, template: str) -> str:
    """A stored report record as text: `structured` (findings with confidences; `standard`, the seed's name, is
    the same), `narrative` or `impression`."""
    response = record["response"]
    head = (f"{DISCLAIMER}\nModel {response['model_version']}. Report {response['report_id']}.")
    review = ""
    if response["requires_radiologist_review"]:
        review = "\n\nRADIOLOGIST REVIEW REQUIRED:\n" + "\n".join(f"- {r}" for r in response["review_reasons"])
    impression = response["impression"] or "(no impression generated)"
    if template == "impression":
        return f"{head}\n\nIMPRESSION: {impression}{review}\n"
    # a record stored while `recommendations` was itself the list has no recommendation_items
    recs = response.get("recommendation_items", response["recommendations"])
    if template == "narrative":
        findings = record.get("findings_text") or "(no findings text generated)"
        body = f"FINDINGS: {findings}\n\nIMPRESSION: {impression}"
        if recs:
            body += "\n\nRECOMMENDATIONS: " + " ".join(recs)
        return f"{head}\n\n{body}{review}\n"
    lines = ["FINDINGS:"]
    for f in response["findings"]:
        tags = [f"confidence {f['confidence']:.2f}"]
        if f["severity"]:
            tags.append(f["severity"])
        if f["is_critical"]:
            tags.append("CRITICAL")
        lines.append(f"- {f['finding']} [{', '.join(tags)}]")
    if not response["findings"]:
        lines.append("- No abnormal findings listed.")
    lines += ["", f"IMPRESSION:\n{impression}", "", "RECOMMENDATIONS:"]
    lines += [f"- {r}" for r in recs] or ["- None."]
    return f"{head}\n\n" + "\n".join(lines) + f"{review}\n"
