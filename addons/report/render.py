"""Renderers: the report model → HTML, Markdown, PDF, JSON or CNIL PIA JSON bytes.

HTML and Markdown come from the Jinja2 templates in ``reports/`` (``teletap.resources.reports_dir()``), so
an organisation can adapt wording and layout without touching code; ``--templates DIR`` puts a folder of
overrides in front of the bundled one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2

from .. import resources
from .model import Report

FORMATS = ("html", "md", "pdf", "json", "cnil-pia")
EXTENSIONS = {"html": ".html", "md": ".md", "pdf": ".pdf", "json": ".json", "cnil-pia": ".pia.json"}

# Characters that start Markdown markup inside a line; '#' only matters at the start.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md_cell(value: Any) -> str:
    """A value as one Markdown table cell: captured text (hosts, paths, labels) cannot break the table or
    inject markup."""
    if value is None:
        return ""
    text = _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    return "\\" + text if text.startswith("#") else text


def md_text(value: Any) -> str:
    """Running text in Markdown with captured values escaped, keeping line breaks."""
    return "\n".join(md_cell(line) for line in str(value).split("\n"))


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def environment(template_dir: Path | None = None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FileSystemLoader(str(resources.reports_dir())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2", "svg"), default=False),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["md"] = md_cell
    env.filters["md_text"] = md_text
    env.filters["paragraphs"] = paragraphs
    env.filters["tojson_sorted"] = lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False)
    return env


def render_html(report: Report, env: jinja2.Environment, *, for_pdf: bool = False, max_rows: int = 0) -> str:
    """``max_rows`` (PDF only, 0 = all) caps the rows printed per table; the document says so where it cuts."""
    css = env.get_template("style.css").render()
    return env.get_template("report.html.j2").render(report=report, css=css, for_pdf=for_pdf,
                                                     max_rows=max_rows if for_pdf else 0)


def render_markdown(report: Report, env: jinja2.Environment) -> str:
    return env.get_template("report.md.j2").render(report=report)


def render_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


class PdfUnavailable(RuntimeError):
    """WeasyPrint or the system libraries it needs (Pango) are missing."""


# WeasyPrint needs ~0.1 s and several MB per page; beyond this many rows a table is cut on paper (with a note)
# and stays complete in the HTML, Markdown and JSON formats and through its SQL.
DEFAULT_PDF_MAX_ROWS = 500


def render_pdf(report: Report, env: jinja2.Environment, max_rows: int = DEFAULT_PDF_MAX_ROWS) -> bytes:
    try:
        import weasyprint
    except (ImportError, OSError) as e:  # OSError: WeasyPrint installed but libpango missing
        raise PdfUnavailable(
            f"PDF output needs WeasyPrint and Pango ({e}). Install them with "
            "'pip install weasyprint' and 'apt-get install libpango-1.0-0 libpangoft2-1.0-0', or write HTML "
            "and print it to PDF from a browser.") from e
    html = render_html(report, env, for_pdf=True, max_rows=max_rows)
    # No base URL: the document references nothing outside itself. A fixed identifier and the report's own
    # generation time (from the HTML meta tags) keep two PDFs of the same database byte-identical.
    document = weasyprint.HTML(string=html, base_url=None).render()
    return document.write_pdf(pdf_identifier=b"teletap-report", uncompressed_pdf=False)


def render(report: Report, fmt: str, template_dir: Path | None = None,
           pdf_max_rows: int = DEFAULT_PDF_MAX_ROWS) -> bytes:
    env = environment(template_dir)
    if fmt == "html":
        return render_html(report, env).encode()
    if fmt == "md":
        return render_markdown(report, env).encode()
    if fmt == "json":
        return render_json(report).encode()
    if fmt == "pdf":
        return render_pdf(report, env, pdf_max_rows)
    if fmt == "cnil-pia":
        from .cnil import render_cnil_pia

        return render_cnil_pia(report, env).encode()
    raise ValueError(f"unknown report format {fmt!r}; one of {', '.join(FORMATS)}")
