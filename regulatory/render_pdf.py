"""The PDF rendering of a packet document (reportlab, US Letter), deterministic: `invariant=1` fixes the
document id and dates, and only the standard Type 1 fonts are used, so nothing depends on the machine.
"""

from __future__ import annotations

import io
import re
from typing import Mapping
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    CondPageBreak,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from regulatory.view import view_model
from regulatory.view_blocks import cell

# The PDF uses the standard Type 1 fonts (nothing to embed, nothing machine-dependent); they cover cp1252.
_PDF_REPLACEMENTS = {"≥": ">=", "≤": "<=", "→": "->", "←": "<-", "↔": "<->", "≠": "!=", "×": "x", "µ": "u",
                     "\u00a0": " "}


def _pdf_text(text: str, font: str | None = None, size: float = 0, width: float = 0) -> str:
    """Paragraph markup of plain text: cp1252-safe, escaped, "\n" as a line break. With a font and a width,
    a word too wide for the column (an identifier such as 'critical_sensitivity:Pneumothorax') is broken after
    ':', '_' or '/' instead of at an arbitrary character."""
    for old, new in _PDF_REPLACEMENTS.items():
        text = text.replace(old, new)
    text = text.encode("cp1252", errors="replace").decode("cp1252")
    if not font:
        return "<br/>".join(escape(line) for line in text.split("\n"))

    def word(w: str) -> str:
        if stringWidth(w, font, size) <= width:
            return escape(w)
        lines, current = [], ""
        for piece in re.split(r"(?<=[:_/])", w):
            if current and stringWidth(current + piece, font, size) > width:
                lines.append(current)
                current = piece
            else:
                current += piece
        lines.append(current)
        return "<br/>".join(escape(line) for line in lines)

    return "<br/>".join(" ".join(word(w) for w in line.split(" ")) for line in text.split("\n"))


def render_pdf(doc: dict, figures: Mapping[str, bytes] | None = None) -> bytes:
    """The packet as a PDF: cover, numbered sections, running head with the release status, 'page x of y';
    figures: the charts' PNG bytes, drawn at the text width (at most 4.2 inches high)."""
    view = view_model(doc, figures)
    margin = 0.75 * inch
    width = LETTER[0] - 2 * margin
    tones = {"bad": (colors.HexColor("#f8d7da"), colors.HexColor("#842029")),
             "warn": (colors.HexColor("#fff3cd"), colors.HexColor("#664d03")),
             "good": (colors.HexColor("#d1e7dd"), colors.HexColor("#0f5132"))}
    body = ParagraphStyle("body", fontName="Helvetica", fontSize=9, leading=11.5, spaceAfter=4, alignment=TA_LEFT)
    styles = {
        "title": ParagraphStyle("title", parent=body, fontName="Helvetica-Bold", fontSize=15, leading=19,
                                spaceAfter=4),
        "subtitle": ParagraphStyle("subtitle", parent=body, fontSize=9.5, textColor=colors.HexColor("#444444"),
                                   spaceAfter=8),
        "h2": ParagraphStyle("h2", parent=body, fontName="Helvetica-Bold", fontSize=12, leading=15, spaceBefore=10,
                             spaceAfter=5, textColor=colors.HexColor("#1f3a5f")),
        "h3": ParagraphStyle("h3", parent=body, fontName="Helvetica-Bold", fontSize=9.5, leading=12, spaceBefore=6,
                             spaceAfter=3),
        "p": body,
        "note": ParagraphStyle("note", parent=body, fontName="Helvetica-Oblique", fontSize=8, leading=10,
                               textColor=colors.HexColor("#444444")),
        "li": ParagraphStyle("li", parent=body, leftIndent=12, bulletIndent=2, spaceAfter=2),
        "cell": ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9, spaceAfter=0),
        "cellb": ParagraphStyle("cellb", parent=body, fontName="Helvetica-Bold", fontSize=7.5, leading=9,
                                spaceAfter=0),
        "mono": ParagraphStyle("mono", parent=body, fontName="Courier", fontSize=7, leading=9, spaceAfter=0),
    }

    def cell_flowable(block_cell: dict, col_width: float, header: bool = False, key: bool = False):
        tone = block_cell["tone"]
        bold = header or key or tone in ("strong", "bad", "good")
        style = styles["mono"] if tone == "mono" else styles["cellb"] if bold else styles["cell"]
        if tone in tones:
            style = ParagraphStyle(f"cell-{tone}-{style.name}", parent=style, textColor=tones[tone][1])
        markup = _pdf_text(block_cell["text"], style.fontName, style.fontSize, col_width - 6)
        return Paragraph(markup or "&nbsp;", style)

    def table_flowable(block: dict):
        data, commands = [], [
            ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa5b1")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
            ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]
        offset = 0
        col_widths = [w * width for w in block["widths"]]
        if block["header"]:
            data.append([cell_flowable(cell(h), col_widths[j], header=True) for j, h in enumerate(block["header"])])
            commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e3e8ef")))
            offset = 1
        for r, row in enumerate(block["rows"]):
            data.append([cell_flowable(c, col_widths[j], key=block["kv"] and j == 0) for j, c in enumerate(row)])
            for j, c in enumerate(row):
                if c["tone"] in tones:
                    commands.append(("BACKGROUND", (j, r + offset), (j, r + offset), tones[c["tone"]][0]))
            if block["kv"]:
                commands.append(("BACKGROUND", (0, r + offset), (0, r + offset), colors.HexColor("#f1f3f6")))
        heights = [None] * offset + [26] * len(block["rows"]) if block["tall"] else None
        table = Table(data, colWidths=col_widths, rowHeights=heights, repeatRows=offset, hAlign="LEFT")
        table.setStyle(TableStyle(commands))
        return table

    def banner_flowable(block: dict):
        fill, ink = tones[block["tone"]]
        style = ParagraphStyle(f"banner-{block['tone']}", parent=body, fontName="Helvetica-Bold", textColor=ink,
                               spaceAfter=0)
        table = Table([[Paragraph(_pdf_text(block["text"]), style)]], colWidths=[width], hAlign="LEFT")
        table.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), fill), ("BOX", (0, 0), (-1, -1), 0.8, ink),
                                   ("LEFTPADDING", (0, 0), (-1, -1), 6), ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                                   ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
        return table

    def flowables(block: dict) -> list:
        kind = block["kind"]
        if kind == "h":
            return [CondPageBreak(1.0 * inch), Paragraph(_pdf_text(block["text"]), styles["h3"])]
        if kind in ("p", "note"):
            return [Paragraph(_pdf_text(block["text"]), styles[kind])]
        if kind == "list":
            return [Paragraph(_pdf_text(item), styles["li"], bulletText="\u2022") for item in block["items"]]
        if kind == "banner":
            return [Spacer(1, 3), banner_flowable(block), Spacer(1, 5)]
        if kind == "table":
            return [table_flowable(block), Spacer(1, 6)]
        if kind == "figure":
            caption = Paragraph(_pdf_text(block["caption"]), styles["note"])
            if block["png"] is None:
                return [Paragraph(_pdf_text(f"Figure {block['file']}: a separate file of this packet."),
                                  styles["note"]), caption]
            reader = ImageReader(io.BytesIO(block["png"]))
            px_w, px_h = reader.getSize()
            scale = min(width / px_w, 4.2 * inch / px_h)
            image = Image(io.BytesIO(block["png"]), width=px_w * scale, height=px_h * scale, hAlign="LEFT")
            return [KeepTogether([image, caption]), Spacer(1, 6)]
        raise AssertionError(f"unknown block kind {kind}")

    story = [Paragraph(_pdf_text(view["title"]), styles["title"]),
             Paragraph(_pdf_text(view["subtitle"]), styles["subtitle"])]
    for block in view["cover"]:
        story += flowables(block)
    for section in view["sections"]:
        heading = Paragraph(_pdf_text(f"{section['number']}. {section['title']}"), styles["h2"])
        first, *rest = section["blocks"]
        lead = flowables(first)
        story += [CondPageBreak(1.5 * inch), KeepTogether([heading, *lead[:2]]), *lead[2:]]
        for block in rest:
            story += flowables(block)

    head, foot, rejected = _pdf_text(view["running_head"]), _pdf_text(view["footer"]), view["rejected"]

    class NumberedCanvas(rl_canvas.Canvas):
        """Draws the running head and 'page x of y' once the page count is known."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages = []

        def showPage(self):
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.saveState()
                self.setFont("Helvetica-Bold" if rejected else "Helvetica", 7.5)
                self.setFillColor(tones["bad"][1] if rejected else colors.HexColor("#555555"))
                self.drawString(margin, LETTER[1] - 0.5 * inch, head)
                self.setFillColor(colors.HexColor("#555555"))
                self.setFont("Helvetica", 7.5)
                self.drawString(margin, 0.5 * inch, foot)
                self.drawRightString(LETTER[0] - margin, 0.5 * inch, f"Page {self._pageNumber} of {total}")
                self.restoreState()
                super().showPage()
            super().save()

    buffer = io.BytesIO()
    p = doc["packet"]
    pdf = SimpleDocTemplate(buffer, pagesize=LETTER, leftMargin=margin, rightMargin=margin, topMargin=margin,
                            bottomMargin=margin, invariant=1, pageCompression=0,
                            title=f"510(k) packet {p['model_name']} v{p['model_version']}",
                            author="rrg regulatory packet generator", creator="rrg regulatory packet generator",
                            subject=f"run {p['run_id']}, created {p['created']}")
    pdf.build(story, canvasmaker=NumberedCanvas)
    return buffer.getvalue()
