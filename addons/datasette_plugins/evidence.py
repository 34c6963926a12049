"""Datasette plugin: makes teletap's evidence readable for people who do not write SQL.

* JSON columns pretty-printed, long values and bodies folded behind a one-line summary;
* flows link to their decoded events and findings, canned-query hosts link to their flows, signature ids
  to the signature that documents them ("undocumented" is plain text, not a link to nothing);
* ``/-/teletap/charts``: traffic over time per category, top destinations and personal data by kind,
  drawn as inline SVG on the server. No JavaScript and no CDN: the auditing host may be offline and
  the evidence must not make a browser fetch anything from the Internet;
* with authentication configured, a refused anonymous visitor is sent to the login page.

Configuration (which columns hold JSON or bodies) lives in the ``plugins.teletap`` metadata block that
``teletap.datasette_meta`` generates.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from datasette import hookimpl
from datasette.utils import tilde_encode
from datasette.utils.asgi import Response
from markupsafe import Markup

from ..datasette_meta import QUERIES
from ..schema import TABLES_BY_NAME

PLUGIN = "teletap"
UNDOCUMENTED = "undocumented"
# Colour-blind-safe palette (Okabe-Ito, then greys); categories keep their colour across charts.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#999999", "#666666")
CSS = """
/* Datasette lists every column description above the table; keep them at hand without pushing the rows
   off the screen (flows has 50 columns). */
dl.column-descriptions { display: grid; grid-template-columns: max-content 1fr; gap: 0.1em 1em; max-height: 12em;
  overflow-y: auto; border: 1px solid #ddd; padding: 0.5em; font-size: 0.85em; }
dl.column-descriptions dd { margin: 0; }
.teletap-json { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 0.85em; }
.teletap-fold > summary { cursor: pointer; color: #555; }
.teletap-fold[open] > summary { margin-bottom: 0.3em; }
.teletap-muted { color: #777; font-style: italic; }
.teletap-chart { max-width: 100%; height: auto; font: 12px sans-serif; }
.teletap-legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; }
.teletap-swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em; }
"""


def _config(datasette: Any) -> dict[str, Any]:
    return datasette.plugin_config(PLUGIN) or {}


def _columns(config: dict[str, Any], key: str, table: str | None) -> list[str]:
    return list((config.get(key) or {}).get(table or "", []))


def _fold(summary: str, inner: Markup) -> Markup:
    return Markup('<details class="teletap-fold"><summary>{}</summary>{}</details>').format(summary, inner)


def _pretty(text: str, limit: int) -> Markup | None:
    """Pretty-printed JSON, folded when long; None if the text is not JSON."""
    if not text or text[0] not in "[{":
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    pretty = json.dumps(parsed, indent=2, ensure_ascii=False)
    block = Markup('<pre class="teletap-json">{}</pre>').format(pretty)
    if len(pretty) <= limit and pretty.count("\n") <= 4:  # a few short lines read fine unfolded
        return block
    size = f"{len(parsed)} item{'s' if len(parsed) != 1 else ''}"
    return _fold(f"{text[: min(limit, 80)]}… ({size}, {len(text)} characters)", block)


def _body(value: bytes | str, limit: int) -> Markup | None:
    """A stored body shown as text when it is text; binary bodies keep Datasette's download link."""
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if any(ord(c) < 9 or 13 < ord(c) < 32 for c in text[:4096]):
            return None
    else:
        text = value
    pretty = _pretty(text.strip(), limit)
    if pretty is not None:
        return pretty
    block = Markup('<pre class="teletap-json">{}</pre>').format(text)
    if len(text) <= limit:
        return block
    return _fold(f"{text[:80]}… ({len(text)} characters)", block)


async def _foreign_key_link(datasette: Any, database: str, table: str, column: str, value: Any) -> Markup | None:
    """A foreign key as a link labelled like Datasette's table pages do; 0.65's row pages show bare ids."""
    for col, other, other_col in TABLES_BY_NAME[table].foreign_keys:
        if col != column:
            continue
        label_column = TABLES_BY_NAME[other].label_column
        label = None
        if label_column:
            row = (await datasette.get_database(database).execute(
                f"select [{label_column}] from [{other}] where [{other_col}] = ?", [value])).first()
            label = row[0] if row else None
        href = datasette.urls.row(database, other, tilde_encode(str(value)))
        if label in (None, "", value):
            return Markup('<a href="{}">{}</a>').format(href, value)
        return Markup('<a href="{}">{}</a>&nbsp;<em>{}</em>').format(href, label, value)
    return None


@hookimpl
def render_cell(row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any) -> Any:
    if isinstance(value, dict):  # a foreign key Datasette already expanded to {"value", "label"}
        return None

    async def inner() -> Any:
        rendered = _render(row, value, column, table, database, datasette)
        if rendered is None and table in TABLES_BY_NAME and value is not None and value != "":
            return await _foreign_key_link(datasette, database, table, column, value)
        return rendered

    return inner


def _render(row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any) -> Any:
    config = _config(datasette)
    limit = int(config.get("collapse_over", 200))
    urls = datasette.urls
    if column == "signature_id" and value == UNDOCUMENTED:
        return Markup('<span class="teletap-muted">undocumented</span>')
    if table is None:
        # Canned queries and SQL results: no foreign keys there, so link the ids officers click on.
        if column == "signature_id" and isinstance(value, str) and value:
            return Markup('<a href="{}">{}</a>').format(urls.row(database, "signatures", tilde_encode(value)), value)
        if column in ("host", "destination", "client_address") and isinstance(value, str) and value:
            key = "client_address" if column == "client_address" else "host"
            href = urls.table(database, "flows") + "?" + urlencode({key: value})
            return Markup('<a href="{}" title="its flows">{}</a>').format(href, value)
    if table == "flows" and column in ("event_count", "finding_count") and value:
        target, noun = ("events", "event") if column == "event_count" else ("findings", "finding")
        href = urls.table(database, target) + "?" + urlencode({"flow_id": row["id"]})
        return Markup('<a href="{}">{} {}{}</a>').format(href, value, noun, "s" if value != 1 else "")
    if value is None or isinstance(value, int | float):
        return None
    if column in _columns(config, "body_columns", table):
        return _body(value, limit)
    if not isinstance(value, str):
        return None
    if column in _columns(config, "json_columns", table):
        pretty = _pretty(value, limit)
        if pretty is not None:
            return pretty
    if table is not None and len(value) > limit * 2:
        block = Markup('<pre class="teletap-json">{}</pre>').format(value)
        return _fold(f"{value[:80]}… ({len(value)} characters)", block)
    return None


@hookimpl
def extra_css_urls(datasette: Any) -> list[str]:
    return [datasette.urls.path("/-/teletap/teletap.css")]


@hookimpl
def menu_links(datasette: Any) -> list[dict[str, str]]:
    return [{"href": datasette.urls.path("/-/teletap/charts"), "label": "Charts"}]


@hookimpl
def database_actions(datasette: Any, database: str) -> list[dict[str, str]]:
    return [{"href": datasette.urls.path("/-/teletap/charts?") + urlencode({"database": database}),
             "label": "Charts of this evidence"}]


@hookimpl
def forbidden(datasette: Any, request: Any) -> Any:
    """Anonymous visitors of a password-protected instance get the login form, not a bare 403."""
    if request.actor is None and datasette.plugin_config("datasette-auth-passwords"):
        return Response.redirect(datasette.urls.path("/-/login"))
    return None


async def _css(request: Any) -> Response:
    return Response(CSS, content_type="text/css; charset=utf-8", headers={"cache-control": "max-age=3600"})


# --- charts -------------------------------------------------------------------------------------------------------

def _colours(categories: list[str]) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)}


def _stacked_bars(periods: list[str], categories: list[str], counts: dict[tuple[str, str], int],
                  colours: dict[str, str]) -> Markup:
    """Flows per period, stacked by category: one bar per period, a y axis with its maximum."""
    width, height, left, bottom, top, right = 900, 280, 60, 40, 10, 50
    plot_w, plot_h = width - left - right, height - bottom - top
    totals = [sum(counts.get((p, c), 0) for c in categories) for p in periods]
    peak = max(totals, default=0) or 1
    slot = plot_w / max(len(periods), 1)
    bar = min(max(slot * 0.8, 1), 60)
    parts = [Markup('<svg class="teletap-chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
                    'xmlns="http://www.w3.org/2000/svg"><title>Flows over time, per category</title>').format(
        width, height, width, height)]
    parts.append(Markup('<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#444"/>'
                        '<line x1="{0}" y1="{2}" x2="{3}" y2="{2}" stroke="#444"/>'
                        '<text x="{4}" y="{5}" text-anchor="end">{6}</text>'
                        '<text x="{4}" y="{2}" text-anchor="end">0</text>'
                        '<text x="12" y="{7}" text-anchor="middle" transform="rotate(-90 12 {7})">flows</text>').format(
        left, top, top + plot_h, left + plot_w, left - 4, top + 10, peak, top + plot_h / 2))
    label_every = max(1, int(130 // slot) + 1) if slot < 130 else 1  # labels ~130 px apart never overlap
    for i, period in enumerate(periods):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        for category in categories:
            n = counts.get((period, category), 0)
            if not n:
                continue
            h = n / peak * plot_h
            y -= h
            parts.append(Markup('<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}">'
                                '<title>{} · {}: {} flow(s)</title></rect>').format(
                x, y, bar, h, colours[category], period, category, n))
        if i % label_every == 0:
            parts.append(Markup('<text x="{:.1f}" y="{}" text-anchor="middle">{}</text>').format(
                x + bar / 2, top + plot_h + 16, period.replace("T", " ")))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def _all_periods(seen: list[str], bucket: str, limit: int = 500) -> list[str]:
    """Every period from the first to the last seen, so quiet hours show as gaps (seen ones if too many)."""
    if not seen:
        return []
    formats = {"minute": ("%Y-%m-%dT%H:%M", timedelta(minutes=1)), "day": ("%Y-%m-%d", timedelta(days=1))}
    fmt, step = formats.get(bucket, ("%Y-%m-%dT%H:00", timedelta(hours=1)))
    try:
        current, last = datetime.strptime(seen[0], fmt), datetime.strptime(seen[-1], fmt)
    except ValueError:
        return seen
    if (last - current) / step >= limit:
        return seen
    periods = []
    while current <= last:
        periods.append(current.strftime(fmt))
        current += step
    return periods


def _horizontal_bars(rows: list[tuple[str, int, str, str]], colours: dict[str, str], unit: str) -> Markup:
    """One bar per (label, value, category, link), longest first."""
    width, row_h, label_w = 900, 22, 300
    height = row_h * len(rows) + 10
    peak = max((r[1] for r in rows), default=0) or 1
    parts = [Markup('<svg class="teletap-chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
                    'xmlns="http://www.w3.org/2000/svg">').format(width, height, width, height)]
    for i, (label, value, category, href) in enumerate(rows):
        y = 5 + i * row_h
        w = value / peak * (width - label_w - 80)
        parts.append(Markup('<a href="{}"><text x="{}" y="{}" text-anchor="end">{}</text>'
                            '<rect x="{}" y="{}" width="{:.1f}" height="{}" fill="{}"><title>{}: {} {} ({})</title>'
                            '</rect></a><text x="{:.1f}" y="{}">{}</text>').format(
            href, label_w - 6, y + 14, label[:45], label_w, y + 2, max(w, 1), row_h - 6,
            colours.get(category, "#999999"), label, value, unit, category, label_w + w + 4, y + 14, value))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def _bucket_for(first: str | None, last: str | None) -> str:
    """Minutes for a short lab capture, hours for up to three days, days beyond."""
    try:
        span = datetime.fromisoformat(last or "") - datetime.fromisoformat(first or "")
    except ValueError:
        return "hour"
    return "minute" if span <= timedelta(hours=2) else "hour" if span <= timedelta(days=3) else "day"


TEMPLATE = """{% extends "base.html" %}
{% block title %}Charts: {{ database }}{% endblock %}
{% block crumbs %}{{ crumbs.nav(request=request, database=database) }}{% endblock %}
{% block content %}
<h1>Charts: {{ database }}</h1>
<form action="" method="get">
  <input type="hidden" name="database" value="{{ database }}">
  <label>Session <select name="session">
    <option value="">all sessions</option>
    {% for s in sessions %}<option value="{{ s.id }}"{% if s.id|string == session %} selected{% endif %}>
      {{ s.id }}: {{ s.label or "(no label)" }} ({{ s.started }})</option>{% endfor %}
  </select></label>
  <label>Time unit <select name="bucket">
    {% for b in ["minute", "hour", "day"] %}<option{% if b == bucket %} selected{% endif %}>{{ b }}</option>{% endfor %}
  </select></label>
  <input type="submit" value="Show">
</form>

<h2>Traffic over time, per category</h2>
{% if periods %}
<p>HTTP flows per {{ bucket }} (UTC). The numbers: <a href="{{ traffic_url }}">Traffic over time, per category</a>.</p>
{{ traffic_svg }}
<ul class="teletap-legend">{% for c in categories %}
  <li><span class="teletap-swatch" style="background: {{ colours[c] }}"></span>{{ c }}</li>{% endfor %}</ul>
{% else %}<p>No flows recorded yet.</p>{% endif %}

<h2>Top destinations</h2>
{% if destinations %}
<p>The {{ destinations|length }} hosts that received the most flows, coloured by category; click one for its
flows. All endpoints: <a href="{{ endpoints_url }}">Endpoints contacted, by category and vendor</a>.</p>
{{ destinations_svg }}
{% else %}<p>No destinations recorded yet.</p>{% endif %}

<h2>Personal data found, by kind</h2>
{% if kinds %}
<p>Findings per kind; details: <a href="{{ personal_url }}">Personal data found, by kind and destination</a>.</p>
{{ kinds_svg }}
{% else %}<p>No personal data found.</p>{% endif %}
{% endblock %}
"""


async def _charts(request: Any, datasette: Any) -> Response:
    name = request.args.get("database") or None
    try:
        db = datasette.get_database(name)
    except (KeyError, IndexError):
        return Response.html("No such database", status=404)
    database = db.name
    await datasette.ensure_permissions(request.actor, [("view-database", database), "view-instance"])
    session = request.args.get("session") or ""
    params = {"session": session}
    # Summaries, not flows and findings: the page must stay fast at millions of rows (addons/summaries.py).
    span = (await db.execute("select min(minute), max(minute) from summary_traffic"
                             " where (:session = '' or session_id = cast(:session as integer))", params)).first()
    bucket = request.args.get("bucket") or _bucket_for(span[0], span[1])
    traffic = (await db.execute(QUERIES["traffic_over_time"]["sql"], {**params, "bucket": bucket})).rows
    periods = _all_periods(sorted({r["period"] for r in traffic}), bucket)
    category_totals: dict[str, int] = {}
    for r in traffic:
        category_totals[r["category"]] = category_totals.get(r["category"], 0) + r["flows"]
    hosts = (await db.execute(QUERIES["hosts_by_flows"]["sql"], params)).rows
    host_flows: dict[str, tuple[int, str]] = {}
    for r in hosts:  # a host can match more than one signature: add its rows up
        flows, category = host_flows.get(r["host"] or "", (0, r["category"] or UNDOCUMENTED))
        host_flows[r["host"] or ""] = (flows + r["flows"], category)
    for category in {c for _, c in host_flows.values()}:
        category_totals.setdefault(category, 0)
    categories = sorted(category_totals, key=lambda c: (-category_totals[c], c))
    colours = _colours(categories)
    top = sorted(host_flows.items(), key=lambda kv: (-kv[1][0], kv[0]))[:15]
    flows_url = datasette.urls.table(database, "flows")
    destinations = [(host or "(no host)", flows, category,
                     flows_url + "?" + urlencode({"host": host, **({"session_id": session} if session else {})}))
                    for host, (flows, category) in top]
    kinds = (await db.execute(
        "select kind, sum(findings) as n, max(severity = 'high') as high from summary_findings"
        " where (:session = '' or session_id = cast(:session as integer)) group by kind order by n desc, kind limit 15",
        params)).rows
    findings_url = datasette.urls.table(database, "findings")
    kind_rows = [(r["kind"] or "?", r["n"], "high severity" if r["high"] else "low or medium severity",
                  findings_url + "?" + urlencode({"kind": r["kind"] or ""})) for r in kinds]
    sessions = (await db.execute("select id, label, started from sessions order by id desc limit 200")).rows

    def query_url(query: str, **args: str) -> str:
        return datasette.urls.query(database, query) + "?" + urlencode({**params, **args})

    template = datasette.jinja_env.from_string(TEMPLATE)
    html = await datasette.render_template(template, {
        "database": database, "session": session, "bucket": bucket, "sessions": sessions,
        "periods": periods, "categories": categories, "colours": colours,
        "traffic_svg": _stacked_bars(periods, categories, {(r["period"], r["category"]): r["flows"] for r in traffic},
                                     colours),
        "destinations": destinations, "destinations_svg": _horizontal_bars(destinations, colours, "flows"),
        "kinds": kind_rows,
        "kinds_svg": _horizontal_bars(kind_rows, {"high severity": "#D55E00", "low or medium severity": "#0072B2"},
                                      "findings"),
        "traffic_url": query_url("traffic_over_time", bucket=bucket),
        "endpoints_url": query_url("endpoints_by_category", category="", vendor=""),
        "personal_url": query_url("personal_data", kind=""),
    }, request=request)
    return Response.html(html)


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return [(r"^/-/teletap/charts$", _charts), (r"^/-/teletap/teletap\.css$", _css)]
