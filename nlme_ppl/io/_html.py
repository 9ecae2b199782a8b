"""Plain HTML pieces of the fit report: a page, sections, tables and embedded PNG figures.

No external assets: the CSS is inline and every figure is a base64 `data:` URI, so the file
stands alone.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd

__all__ = ["figure_img", "kv_table", "note", "page", "section", "table"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 1.5em 2em 4em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #0b5394; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2.2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; color: #0b5394; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .5em 1em; font-size: .92em; }
nav a { margin-right: 1.1em; color: #0b5394; text-decoration: none; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .86em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: right; }
th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fbfcfd; }
.scroll { max-height: 28em; max-width: 100%; overflow: auto; display: inline-block; }
img { max-width: 100%; border: 1px solid #eaeef2; margin: .4em 0; }
.note { background: #fff8e5; border-left: 4px solid #d4a72c; padding: .4em .8em; margin: .6em 0; }
.error { background: #ffebe9; border-left: 4px solid #cf222e; padding: .4em .8em; margin: .6em 0; }
.meta { color: #57606a; font-size: .9em; }
"""


def _cell(x, tag: str = "td") -> str:
    """One cell; a float shows 4 significant digits and keeps its full value in `data-value`."""
    if isinstance(x, (bool, np.bool_)):
        text = "yes" if x else "no"
    elif isinstance(x, (int, np.integer)):
        text = str(int(x))
    elif isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return f'<{tag} data-value="nan"></{tag}>'
        return f'<{tag} data-value="{float(x)!r}">{float(x):.4g}</{tag}>'
    elif isinstance(x, (list, tuple)):
        text = ", ".join(str(v) for v in x) if x else "none"
    else:
        text = str(x)
    return f"<{tag}>{html.escape(text)}</{tag}>"


def table(df: pd.DataFrame, *, table_id: str | None = None, index: bool = True, scroll: bool = False) -> str:
    """A DataFrame as an HTML table; numbers with 6 significant digits, NaN as an empty cell."""
    head = ([html.escape(str(df.index.name or ""))] if index else []) + [html.escape(str(c)) for c in df.columns]
    rows = []
    for label, row in zip(df.index, df.itertuples(index=False)):
        cells = ([_cell(label, "th")] if index else []) + [_cell(v) for v in row]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' id="{html.escape(table_id)}"' if table_id else ""
    out = f"<table{attr}><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    return f'<div class="scroll">{out}</div>' if scroll else out


def kv_table(values: dict, *, table_id: str | None = None) -> str:
    """A two-column table of a flat mapping (nested mappings are flattened with a dot)."""
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                flat[f"{prefix}{k}"] = v

    walk("", values)
    df = pd.DataFrame({"value": list(flat.values())}, index=pd.Index(list(flat), name="quantity"), dtype=object)
    return table(df, table_id=table_id)


def figure_img(fig, *, alt: str, dpi: int = 90) -> str:
    """A matplotlib figure as an `<img>` with a base64 PNG `data:` URI; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def note(text: str, *, error: bool = False) -> str:
    return f'<p class="{"error" if error else "note"}">{html.escape(text)}</p>'


def section(section_id: str, title: str, body: str) -> str:
    return f'<section><h2 id="{html.escape(section_id)}">{html.escape(title)}</h2>\n{body}\n</section>'


def page(title: str, meta: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: `sections` are `(id, title, body html)`."""
    nav = "<nav>" + "".join(f'<a href="#{html.escape(i)}">{html.escape(t)}</a>' for i, t, _ in sections) + "</nav>"
    body = "\n".join(section(*s) for s in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body><h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(meta)}</p>\n{nav}\n{body}\n</body></html>\n"
    )
