"""One self-contained HTML page: every PNG embedded as a base64 data URI, no external files, so
index.html alone can be mailed or attached to an issue.

A page is a title, an intro line and sections; a section is a heading and blocks:
    ("text", str) | ("list", [str]) | ("table", header, rows) | ("figure", png_path, caption)
Every string is HTML-escaped.
"""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.src { color: #777; font-size: .85em; }
figure { margin: .8em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } .missing li { color: #8a4b00; } .note { color: #777; }
"""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def _table(header, rows, source_column: bool = False) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = [f"<td{' class=src' if source_column and i == len(row) - 1 else ''}>{escape(str(c))}</td>"
                 for i, c in enumerate(row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _block(block) -> str:
    kind = block[0]
    if kind == "text":
        return f"<p>{escape(block[1])}</p>"
    if kind == "note":
        return f"<p class=note>{escape(block[1])}</p>"
    if kind == "list":
        items = "".join(f"<li>{escape(str(x))}</li>" for x in block[1])
        return f"<ul class=missing>{items}</ul>"
    if kind == "table":
        return _table(block[1], block[2], source_column=len(block) > 3 and block[3])
    if kind == "figure":
        path, caption = Path(block[1]), block[2]
        return (f"<figure><img alt=\"{escape(path.name)}\" src=\"{data_uri(path)}\">"
                f"<figcaption>{escape(path.name)}: {escape(caption)}</figcaption></figure>")
    raise ValueError(f"unknown report block kind {kind!r}")


def render(title: str, intro: str, sections: list) -> str:
    parts = ["<!DOCTYPE html>", "<html lang=en><head><meta charset=utf-8>",
             f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>", f"<p class=note>{escape(intro)}</p>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts.extend(_block(b) for b in blocks)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
