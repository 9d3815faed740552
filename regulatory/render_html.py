"""The HTML rendering of a packet document: one self-contained page (no scripts, no external resources) from
`templates/packet.html.j2`, every text autoescaped."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Mapping

import jinja2

from regulatory.view import view_model

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def render_html(doc: dict, figures: Mapping[str, bytes] | None = None) -> bytes:
    """figures: the charts' PNG bytes, embedded as data: URIs so the page stays self-contained."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["base64"] = lambda data: base64.b64encode(data).decode("ascii")
    return env.get_template("packet.html.j2").render(v=view_model(doc, figures)).encode("utf-8")
