"""Rendering of ``lewin report``: small aggregates (dicts) -> static SVG charts -> one HTML file.

Pure functions, no Spark: ``lewin.jobs.report`` runs the queries and hands over sections made of
blocks, and this module draws them. The page needs nothing at view time: the CSS is inline, every
chart is an inline SVG drawn by matplotlib (its object API, no pyplot: no global backend, no
state shared with the caller), and a Content-Security-Policy forbids the page from loading
anything, so a reference to the network would fail in the browser rather than leak.

A section is a dict::

    {"id": "funnel", "title": "...", "intro": "...",
     "missing": [{"table": "runs", "command": "lewin ingest"}],
     "blocks": [...]}

and a block one of::

    {"type": "chart", "chart": <chart spec>}
    {"type": "table", "title": str, "columns": [str], "rows": [[value]], "numeric": [col index]}
    {"type": "note", "text": str}
    {"type": "details", "summary": str, "blocks": [...]}   # folded (<details>), e.g. long row lists

A chart spec has ``id``, ``title``, ``kind`` and the kind's data (``render_chart``). Every chart
is wrapped in ``<figure class="chart" data-points="N">``: N counts the values drawn (``chart_points``), so
a chart without data says so in the page.
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

import jinja2
from markupsafe import Markup

# sources keep their colour across charts; anything else takes the palette in order
SOURCE_COLORS = {"reddit": "#e4572e", "twitter": "#1d9bf0", "blogger": "#f29e4c", "amazon": "#6a4c93",
                 "all": "#555555"}
PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd"]
STATUS_COLORS = {"ok": "#55a868", "failed": "#ccb974", "dead": "#c44e52", "superseded": "#8c8c8c"}


def color_for(name: str, i: int) -> str:
    return SOURCE_COLORS.get(name) or STATUS_COLORS.get(name) or PALETTE[i % len(PALETTE)]


@dataclass
class RenderedChart:
    id: str
    title: str
    points: int
    svg: str


@dataclass
class Rendered:
    html: str
    charts: list[RenderedChart] = field(default_factory=list)


# --- charts --------------------------------------------------------------------------------------------
def _nz(values) -> int:
    return sum(1 for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)) and v != 0)


def chart_points(spec: dict) -> int:
    """The values a chart draws (what ``data-points`` says): its non-zero values, or ``points`` when the
    spec gives it (a chart where 0 is a value, such as a pass rate, counts its rows)."""
    kind = spec["kind"]
    if spec.get("points") is not None:  # a chart where 0 is a value (a pass rate) counts its rows
        return int(spec["points"])
    if kind == "facets":
        return sum(chart_points(p) for p in spec["panels"])
    if kind in ("bars", "hist"):
        return sum(_nz(v) for v in spec.get("series", {}).values())
    if kind == "heatmap":
        return sum(_nz(row) for row in spec.get("values", []))
    raise ValueError(f"unknown chart kind {kind!r}")


def _fmt(v: float) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.2f}" if abs(v) < 10 else f"{v:,.0f}"
    return f"{int(v):,}"


def _draw_bars(ax, spec: dict) -> None:
    """Horizontal bars: one row per category, series stacked (default) or side by side."""
    cats = list(spec.get("categories", []))
    series = spec.get("series", {})
    stacked = spec.get("stacked", True)
    n = len(cats)
    ys = list(range(n))
    left = [0.0] * n
    k = max(1, len(series))
    height = 0.8 if stacked else 0.8 / k
    colors = spec.get("colors", {})
    label = (lambda v: f"{v:.0%}") if spec.get("percent") else _fmt  # noqa: E731
    for i, (name, vals) in enumerate(series.items()):
        vals = [0 if v is None else v for v in vals]
        col = colors.get(name) or color_for(name, i)
        if stacked:
            ax.barh(ys, vals, left=left, height=height, color=col, label=name)
            left = [a + b for a, b in zip(left, vals)]
        else:
            off = [y - 0.4 + height * (i + 0.5) for y in ys]
            ax.barh(off, vals, height=height, color=col, label=name)
            if spec.get("value_labels", True):
                for y, v in zip(off, vals):
                    if v:
                        ax.text(v, y, " " + label(v), va="center", fontsize=7)
    if stacked and spec.get("value_labels", True):
        for y, v in zip(ys, left):
            if v or spec.get("percent"):
                ax.text(v, y, " " + label(v), va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels(cats, fontsize=8)
    ax.invert_yaxis()
    if spec.get("log"):
        ax.set_xscale("symlog", linthresh=1)
    if spec.get("xmax") is not None:
        ax.set_xlim(0, spec["xmax"])
    if spec.get("markers"):  # reference marks per category, e.g. the target of a mix
        for name, vals in spec["markers"].items():
            mys = [y for y, v in zip(ys, vals) if v is not None]
            mvs = [v for v in vals if v is not None]
            ax.scatter(mvs, mys, marker="|", s=300, linewidths=2.5, color="#222222", zorder=5, label=name)
    ax.set_xlabel(spec.get("xlabel", ""), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=7)
    if len(series) > 1 or spec.get("markers") or spec.get("legend"):
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    # room for the value labels
    lo, hi = ax.get_xlim()
    if not spec.get("log") and spec.get("xmax") is None and hi > 0:
        ax.set_xlim(lo, hi * 1.12)


def _log_axis(ax, lo: float, hi: float) -> None:
    """A log x axis labelled with plain numbers at 1-2-5 steps (no 4x10^1 minor labels)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ticks = [m * 10 ** k for k in range(int(math.floor(math.log10(max(lo, 1e-9)))), int(math.ceil(math.log10(hi))) + 1)
             for m in (1, 2, 5) if lo <= m * 10 ** k <= hi]
    if len(ticks) > 9:
        ticks = [t for t in ticks if str(t).startswith("1")]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)


def _draw_hist(ax, spec: dict) -> None:
    """Pre-binned histograms (counts per bin) of one or more series, drawn as steps."""
    edges = list(spec["edges"])
    for i, (name, counts) in enumerate(spec.get("series", {}).items()):
        counts = [0 if c is None else c for c in counts]
        col = spec.get("colors", {}).get(name) or PALETTE[i % len(PALETTE)]
        ax.stairs(counts, edges, label=name, color=col, linewidth=1.6, fill=spec.get("fill", False) and i == 0,
                  alpha=0.9)
    if spec.get("logx"):
        _log_axis(ax, edges[0], edges[-1])
    ax.set_xlabel(spec.get("xlabel", ""), fontsize=8)
    ax.set_ylabel(spec.get("ylabel", "count"), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    if len(spec.get("series", {})) > 1:
        ax.legend(fontsize=7, frameon=False, loc="best")


def _draw_heatmap(ax, spec: dict) -> None:
    rows, cols, values = spec["rows"], spec["cols"], spec["values"]
    import numpy as np

    arr = np.array(values, dtype=float) if rows and cols else np.zeros((1, 1))
    ax.imshow(arr, aspect="auto", cmap="Blues", vmin=0, vmax=max(1.0, float(arr.max())))
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([str(c) for c in cols], fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    top = float(arr.max()) if arr.size else 0.0
    for r in range(len(rows)):
        for c in range(len(cols)):
            v = values[r][c]
            if v:
                ax.text(c, r, _fmt(v), ha="center", va="center", fontsize=6.5,
                        color="white" if v > top * 0.6 else "#222222")
    ax.set_xlabel(spec.get("xlabel", ""), fontsize=8)


_DRAW = {"bars": _draw_bars, "hist": _draw_hist, "heatmap": _draw_heatmap}


def _panel_height(spec: dict) -> float:
    if spec["kind"] == "bars":
        n = len(spec.get("categories", []))
        per = 0.24 if spec.get("stacked", True) else 0.16 * max(1, len(spec.get("series", {})))
        return max(1.3, 0.5 + per * n)
    if spec["kind"] == "heatmap":
        return max(1.4, 0.5 + 0.26 * len(spec.get("rows", [])))
    return 2.2


def render_chart(spec: dict, salt: str = "") -> RenderedChart:
    """One chart spec -> an inline SVG. Kinds: ``bars`` (categories, series {name: values},
    stacked, log, markers), ``hist`` (edges, series {name: counts per bin}, logx), ``heatmap``
    (rows, cols, values), ``facets`` (panels: a list of those, each with a ``title``; ncols)."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    panels = spec["panels"] if spec["kind"] == "facets" else [spec]
    ncols = min(spec.get("ncols", 2), len(panels)) if spec["kind"] == "facets" else 1
    ncols = max(1, ncols)
    nrows = max(1, math.ceil(len(panels) / ncols))
    width = spec.get("width", 9.5)
    heights = [max((_panel_height(p) for p in panels[r * ncols:(r + 1) * ncols]), default=1.5) for r in range(nrows)]
    height = sum(heights) + 0.45 * nrows + (0.3 if spec["kind"] == "facets" else 0)
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": f"lewin-report-{salt or spec['id']}",
                     "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
                     "axes.titlesize": 9}):
        fig = Figure(figsize=(width, height), layout="constrained")
        grid = fig.add_gridspec(nrows, ncols, height_ratios=heights)
        for i, p in enumerate(panels):
            ax = fig.add_subplot(grid[i // ncols, i % ncols])
            _DRAW[p["kind"]](ax, p)
            if spec["kind"] == "facets":
                ax.set_title(p.get("title", ""), fontsize=9, loc="left")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and doctype: the SVG sits inside HTML
    svg = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1', svg, count=1)  # scale with the page
    return RenderedChart(id=spec["id"], title=spec.get("title", ""), points=chart_points(spec), svg=svg)


# --- the page --------------------------------------------------------------------------------------------
_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa; --warn:#fff8c5; --warnline:#d4a72c; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { color: var(--muted); font-size: 12.5px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0 4px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; min-width: 110px; }
.card .v { font-size: 19px; font-weight: 600; }
.card .k { font-size: 11.5px; color: var(--muted); }
nav { padding: 6px 28px; border-bottom: 1px solid var(--line); font-size: 13px; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
main { padding: 4px 28px 40px; max-width: 1180px; }
section { border-bottom: 1px solid var(--line); padding: 8px 0 18px; }
h2 { font-size: 18px; margin: 16px 0 6px; }
h3 { font-size: 14.5px; margin: 14px 0 6px; }
p.intro { color: var(--muted); margin: 2px 0 8px; max-width: 900px; }
.missing { background: var(--warn); border: 1px solid var(--warnline); border-radius: 6px; padding: 8px 12px; margin: 8px 0;
           max-width: 900px; }
.missing ul { margin: 4px 0 0 18px; padding: 0; }
.note { color: var(--muted); font-style: italic; margin: 6px 0; }
figure.chart { margin: 10px 0 14px; max-width: 980px; }
figure.chart svg { width: 100%; height: auto; display: block; }
figure.chart figcaption { font-weight: 600; font-size: 13px; margin-bottom: 2px; }
figure.chart .caption { font-weight: 400; color: var(--muted); font-size: 12px; }
table.data { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 12px; }
table.data caption { text-align: left; font-weight: 600; font-size: 13px; padding-bottom: 3px; }
table.data th, table.data td { border: 1px solid var(--line); padding: 3px 8px; vertical-align: top; }
table.data th { background: var(--soft); text-align: left; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data td { max-width: 520px; overflow-wrap: anywhere; }
details { margin: 6px 0 10px; }
details > summary { cursor: pointer; color: #0969da; }
code { background: var(--soft); padding: 0 4px; border-radius: 4px; font-size: 12.5px; }
footer { color: var(--muted); font-size: 12px; padding: 10px 28px 30px; }
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<header>
<h1>{{ title }}</h1>
<div class="meta">{% for k, v in meta %}{{ k }}: <code>{{ v }}</code>{% if not loop.last %} &middot; {% endif %}{% endfor %}</div>
{% if cards %}<div class="cards">{% for c in cards %}<div class="card"><div class="v">{{ c.value }}</div><div class="k">{{ c.label }}</div></div>{% endfor %}</div>{% endif %}
</header>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}
<section id="{{ s.id }}" data-missing="{{ s.missing|length }}">
<h2>{{ s.title }}</h2>
{% if s.intro %}<p class="intro">{{ s.intro }}</p>{% endif %}
{% if s.missing %}<div class="missing"><strong>Not in this table set:</strong>
<ul>{% for m in s.missing %}<li><code>{{ m.table }}</code>{% if m.what %} ({{ m.what }}){% endif %}: produced by <code>{{ m.command }}</code></li>{% endfor %}</ul></div>{% endif %}
{{ s.body }}
</section>
{% endfor %}
</main>
<footer>{{ footer }}</footer>
</body>
</html>
"""

_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def _cell(v: Any) -> tuple[str, bool]:
    if v is None:
        return "", False
    if isinstance(v, bool):
        return ("yes" if v else "no"), False
    if isinstance(v, int):
        return f"{v:,}", True
    if isinstance(v, float):
        if math.isnan(v):
            return "", True
        return (f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"), True
    return str(v), False


def _table(block: dict) -> str:
    out = ['<table class="data">']
    if block.get("title"):
        out.append(f"<caption>{html.escape(block['title'])}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in block["columns"]) + "</tr></thead><tbody>")
    for row in block["rows"]:
        cells = []
        for v in row:
            text, num = _cell(v)
            cells.append(f'<td class="num">{html.escape(text)}</td>' if num else f"<td>{html.escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _blocks(blocks: list[dict], charts: list[RenderedChart]) -> str:
    out = []
    for b in blocks:
        t = b["type"]
        if t == "chart":
            rc = render_chart(b["chart"], salt=str(len(charts)))
            charts.append(rc)
            cap = b["chart"].get("caption", "")
            out.append(f'<figure class="chart" id="chart-{html.escape(rc.id)}" data-points="{rc.points}">'
                       f"<figcaption>{html.escape(rc.title)}"
                       + (f'<div class="caption">{html.escape(cap)}</div>' if cap else "")
                       + f"</figcaption>{rc.svg}</figure>")
        elif t == "table":
            out.append(_table(b))
        elif t == "note":
            out.append(f'<p class="note">{html.escape(b["text"])}</p>')
        elif t == "heading":
            out.append(f"<h3>{html.escape(b['text'])}</h3>")
        elif t == "details":
            out.append(f"<details><summary>{html.escape(b['summary'])}</summary>{_blocks(b['blocks'], charts)}</details>")
        else:
            raise ValueError(f"unknown block type {t!r}")
    return "\n".join(out)


def render_page(title: str, meta: list[tuple[str, str]], cards: list[dict], sections: list[dict],
                footer: str = "") -> Rendered:
    """The whole self-contained page: header (``meta`` pairs, summary ``cards`` {label, value}),
    a table of contents and every section, missing tables named with the command that makes them."""
    charts: list[RenderedChart] = []
    rendered = []
    for s in sections:
        body = Markup(_blocks(s.get("blocks", []), charts))
        rendered.append({"id": s["id"], "title": s["title"], "intro": s.get("intro", ""),
                         "missing": [{"table": m["table"], "command": m["command"], "what": m.get("what", "")}
                                     for m in s.get("missing", [])], "body": body})
    page = _env.from_string(_TEMPLATE).render(title=title, css=Markup(_CSS), meta=meta,
                                              cards=cards, sections=rendered, footer=footer)
    return Rendered(html=page, charts=charts)
