"""The HTML rendering of a packet document: one self-contained page (no scripts, no external resources) from
`templates/packet.html.j2`, every text autoescaped."""

from __future__ import annotations

from pathlib import Path

import jinja2

from regulatory.view import view_model

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def render_html(doc: dict) -> bytes:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    return env.get_template("packet.html.j2").render(v=view_model(doc)).encode("utf-8")
