"""Small HTML building blocks for self-contained reports: escaped text, tables from records,
PNG images embedded as data URIs (one file to mail or archive, no broken links)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2a44;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85;font-size:14px}
nav{background:#fff;border-bottom:1px solid #dde1e8;padding:8px 32px;position:sticky;top:0;font-size:14px}
nav a{margin-right:16px;color:#2456a6;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;margin:18px 0;padding:14px 22px}
h2{font-size:19px;border-bottom:1px solid #e5e8ee;padding-bottom:6px}h3{font-size:16px;margin-top:20px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:right}
th{background:#f0f2f6}td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #dde1e8;border-radius:6px;padding:8px 14px;min-width:140px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#5a6478}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top}figure img{max-width:100%;border:1px solid #e5e8ee}
figcaption{font-size:12px;color:#5a6478;max-width:640px}.note{font-size:13px;color:#5a6478}.warn{color:#a33}
"""


def esc(text: Any) -> str:
    return html.escape(str(text))


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers to short text; None/NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1000 or abs(value) < 0.001 and value != 0 else f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) or v is None for v in value):
        return f"[{fmt(value[0], digits)}, {fmt(value[1], digits)}]"
    return esc(value)


def table(records: Sequence[dict], columns: Sequence[str] | None = None, headers: dict[str, str] | None = None) -> str:
    """An HTML table of records (missing cells shown as a dash)."""
    if not records:
        return '<p class="note">none</p>'
    columns = list(columns or records[0].keys())
    headers = headers or {}
    head = "".join(f"<th>{esc(headers.get(c, c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in records)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(path: Path, caption: str = "", width: int | None = None) -> str:
    """A PNG embedded as a data URI, with a caption; a missing file becomes a visible note."""
    path = Path(path)
    if not path.exists():
        return f'<p class="note warn">figure missing: {esc(path)}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    style = f' style="width:{width}px"' if width else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(caption or path.name)}" src="data:image/png;base64,{data}"{style}>{cap}</figure>'


def cards(items: Iterable[tuple[str, Any]]) -> str:
    """Headline numbers; a str value is taken as already formatted HTML (from :func:`fmt`)."""
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{v if isinstance(v, str) else fmt(v)}</b><span>{esc(k)}</span></div>' for k, v in items)
        + "</div>"
    )


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


#: after loading, the page records how many of its images decoded (``<body data-images="n/m">``),
#: so a headless browser can check that every embedded figure shows
IMAGE_CHECK = (
    "<script>window.addEventListener('load',function(){var a=Array.prototype.slice.call(document.images);"
    "var ok=a.filter(function(i){return i.complete&&i.naturalWidth>0}).length;"
    "document.body.setAttribute('data-images',ok+'/'+a.length)});</script>"
)


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """A whole document: header, a navigation bar of the sections, the sections."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f"<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav><main>{body}</main>{IMAGE_CHECK}</body></html>\n"
    )
