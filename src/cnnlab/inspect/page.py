"""One self-contained HTML page: the shared style and the pieces (embedded pictures, tables, the page itself) of
``cnnlab report`` for classifier runs (:mod:`cnnlab.inspect.report`) and GAN runs (:mod:`cnnlab.generative`).
Every picture is a base64 PNG data URI and the page has no scripts or links to fetch: it opens offline."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from cnnlab.inspect.grid import png_bytes

REPORT_NAME = "report.html"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
img.pixels { image-rendering: pixelated; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
.skip { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.note { font-size: 0.85em; color: #555; }
.meta { color: #555; font-size: 0.9em; }
summary { cursor: pointer; color: #333; margin: 0.4em 0; }
.row { display: flex; flex-wrap: wrap; gap: 0 1em; } .row figure { width: 31%; min-width: 200px; }
"""


def img(picture: object, alt: str) -> str:
    data = base64.b64encode(png_bytes(picture)).decode("ascii")
    pixels = "" if hasattr(picture, "savefig") else ' class="pixels"'  # exact pixel pictures stay sharp when scaled
    return f'<img{pixels} src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def png_file(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def figure(picture: object, caption: str) -> str:
    return f"<figure>{img(picture, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def table(headers: list[str], rows: list[list[object]], left: int = 1) -> str:
    def cell(tag: str, i: int, value: object) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path: Path, title: str, header: str, sections: list[tuple[str, str]]) -> Path:
    """Write the page atomically: ``header`` (HTML), a table of contents, then each (title, HTML) section."""
    toc = " · ".join(f'<a href="#{_anchor(t)}">{html.escape(t)}</a>' for t, _ in sections)
    body = "".join(
        f'<section id="{_anchor(t)}"><h2>{html.escape(t)}</h2>{content}</section>' for t, content in sections
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{header}<nav>{toc}</nav>{body}</body></html>\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")
