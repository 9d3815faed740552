"""The generic blocks of the packet's view model (shared by regulatory.view and regulatory.view_evidence)."""

from __future__ import annotations


def cell(text: str, tone: str | None = None) -> dict:
    """A table cell; tone: None, "strong", "mono", "good", "warn" or "bad"."""
    return {"text": text, "tone": tone}


def table_block(header: list[str] | None, rows: list[list], widths: list[float], kv: bool = False,
                tall: bool = False) -> dict:
    """A table block; `widths` are fractions of the text width (sum 1); a cell's "\n" is a line break;
    `tall` rows leave room for handwriting (signatures)."""
    rows = [[c if isinstance(c, dict) else cell(str(c)) for c in row] for row in rows]
    return {"kind": "table", "header": header, "rows": rows, "widths": widths, "kv": kv, "tall": tall}
