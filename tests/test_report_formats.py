"""Each output format: self-contained HTML, safe Markdown, a PDF that renders, and a CNIL PIA file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from markupsafe import escape

from teletap.report.cnil import GAUGE_QUESTIONS, LIST_QUESTIONS, TEXT_QUESTIONS
from teletap.report.render import md_cell

from . import test_report_capture as cap
from .support import rows

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> cap.Capture:
    return cap.capture(tmp_path_factory)


@pytest.fixture(scope="module")
def outputs(evidence: cap.Capture, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("formats")
    paths = {}
    for fmt in ("html", "md", "json", "cnil-pia"):
        paths[fmt] = out / f"report.{fmt}"
        cap.teletap_report("--db", str(evidence.db), "--session", "1", "--level", "office=neither", "--format", fmt,
                           "--out", str(paths[fmt]), "--generated-at", cap.GENERATED_AT)
    return paths


@pytest.fixture(scope="module")
def model(outputs: dict[str, Path]) -> dict:
    return json.loads(outputs["json"].read_text())


def str_escape(value: object) -> str:
    """How the templates escape text (Jinja2's autoescape is markupsafe)."""
    return str(escape(str(value)))


def all_tables(model: dict) -> list[dict]:
    return [t for s in model["sections"] for t in s["tables"]]


def test_html_is_self_contained_and_shows_every_table(outputs: dict[str, Path], model: dict):
    html = outputs["html"].read_text()
    assert html.startswith("<!DOCTYPE html>")
    # No external assets: no scripts, stylesheets, images or fonts fetched from anywhere.
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(", html, re.I)
    assert not re.search(r'\ssrc\s*=', html, re.I)
    assert html.count("<svg") >= 3 and "<style>" in html
    for t in all_tables(model):
        assert f'id="{t["id"]}"' in html
        assert str_escape(t["sql"]) in html  # the SQL behind every table is printed with it
        count = len(t["rows"])
        assert f'({count} {"row" if count == 1 else "rows"})' in html
        for row in t["rows"]:  # every cell, escaped, in the HTML
            for value in row:
                if value is not None and value != "":
                    assert str_escape(str(value)) in html, (t["id"], value)
    # The session label's markup characters are text, never markup.
    assert str_escape(cap.BASELINE) in html and "<defaults>" not in html
    assert cap.QUERY_EMAIL not in html and "bob@example.invalid" not in html


def test_markdown_tables_are_well_formed(outputs: dict[str, Path], model: dict):
    md = outputs["md"].read_text()
    assert md.startswith("# DPIA evidence report")
    tables = all_tables(model)
    assert md.count("```sql") == len(tables)
    # Every table row has exactly as many unescaped cell separators as its header.
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            width = len(re.findall(r"(?<!\\)\|", line))
            j = i + 2
            while j < len(lines) and lines[j].startswith("| "):
                assert len(re.findall(r"(?<!\\)\|", lines[j])) == width, lines[j]
                j += 1
    assert md_cell(cap.BASELINE) in md and "\\<defaults\\> \\| run 1" in md
    for t in tables:
        for row in t["rows"]:
            for value in row:
                if value is not None and value != "":
                    assert md_cell(value) in md, (t["id"], value)
    assert cap.QUERY_EMAIL not in md


def test_markdown_escaping():
    assert md_cell("a|b") == "a\\|b"
    assert md_cell("<script>x</script>") == "\\<script\\>x\\</script\\>"
    assert md_cell("# heading\nnext") == "\\# heading next"
    assert md_cell(None) == "" and md_cell(42) == "42"


def test_cnil_pia_file_matches_the_tool_structure(outputs: dict[str, Path], model: dict):
    pia = json.loads(outputs["cnil-pia"].read_text())
    # PiaService.importData (LINCnil/pia 44dd313) reads these keys; answers/measures/evaluations/comments
    # are iterated, so each must be a list.
    assert list(pia) == ["pia", "answers", "measures", "evaluations", "comments"]
    assert all(isinstance(pia[k], list) for k in ("answers", "measures", "evaluations", "comments"))
    pia_fields = {"id", "status", "name", "category", "author_name", "evaluator_name", "validator_name", "dpo_status",
                  "dpo_opinion", "concerned_people_opinion", "concerned_people_status",
                  "concerned_people_searched_opinion", "concerned_people_searched_content", "rejection_reason",
                  "applied_adjustments", "dpos_names", "people_names", "progress", "is_example", "is_archive",
                  "created_at", "updated_at"}  # src/app/models/pia.model.ts
    assert set(pia["pia"]) <= pia_fields and pia["pia"]["status"] == 0
    assert pia["pia"]["name"].startswith("DPIA evidence report") and cap.BASELINE in pia["pia"]["name"]
    assert pia["pia"]["created_at"] == cap.GENERATED_AT
    answer_keys = {"id", "pia_id", "reference_to", "data", "created_at", "updated_at"}  # answer.model.ts
    refs = [a["reference_to"] for a in pia["answers"]]
    assert len(refs) == len(set(refs)), "one answer per question"
    for a in pia["answers"]:
        assert set(a) == answer_keys and isinstance(a["reference_to"], int)
        assert set(a["data"]) == {"text", "gauge", "list"}
        ref, data = a["reference_to"], a["data"]
        assert ref in TEXT_QUESTIONS + LIST_QUESTIONS + GAUGE_QUESTIONS
        if ref in LIST_QUESTIONS:
            assert isinstance(data["list"], list) and all(isinstance(x, str) and x for x in data["list"])
        elif ref in GAUGE_QUESTIONS:
            assert data["gauge"] in range(5) and isinstance(data["text"], str)
        else:
            assert isinstance(data["text"], str) and data["text"].startswith("<") and data["list"] == []
            assert "<script" not in data["text"]
    by_ref = {a["reference_to"]: a["data"] for a in pia["answers"]}
    # The natural prefills (landscape §5.2): data processed, life cycle, storage, transfers.
    assert {111, 121, 122, 123, 215, 227} <= set(by_ref)
    assert "www.google-analytics.com" in by_ref[121]["text"] and "b***@e***.invalid" in by_ref[121]["text"]
    assert "bob@example.invalid" not in json.dumps(pia)
    risks = [r[1] for r in next(t for t in all_tables(model) if t["id"] == "risk-register")["rows"]]
    assert by_ref[322]["list"] == risks
    measures = pia["measures"]
    assert all(set(m) == {"id", "pia_id", "title", "content", "placeholder", "created_at", "updated_at"}
               for m in measures)  # measure.model.ts
    titles = [m["title"] for m in measures]
    assert "Configure the level of client software diagnostic data sent by Office to Microsoft" in titles
    assert len(set(m["id"] for m in measures)) == len(measures)
    assert set(by_ref[324]["list"]) <= set(titles)  # the risk's controls name measures of this PIA
    assert pia["evaluations"] == [] and pia["comments"] == []  # judgements are left to the evaluators


def require_pdf_tools() -> None:
    pytest.importorskip("weasyprint", reason="PDF output needs WeasyPrint (pip install weasyprint)")
    try:
        import weasyprint  # noqa: F401  # importing loads Pango: fails with OSError if libpango is missing
    except OSError as e:
        pytest.skip(f"WeasyPrint cannot load Pango ({e}); apt-get install libpango-1.0-0 libpangoft2-1.0-0")
    if shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None:
        pytest.skip("pdftoppm/pdftotext not installed (apt-get install poppler-utils)")


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_pdf_renders_to_png(evidence: cap.Capture, tmp_path: Path):
    require_pdf_tools()
    pdf = tmp_path / "report.pdf"
    cap.teletap_report("--db", str(evidence.db), "--compare", "1", "--session", "2", "--level", "office=neither",
                       "--format", "pdf", "--out", str(pdf), "--generated-at", cap.GENERATED_AT)
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert "DPIA evidence report" in text and "Evidence appendix" in text and "Before and after" in text
    assert "WITH scope_flows AS" in text  # the SQL is printed on paper too
    ARTIFACTS.mkdir(exist_ok=True)
    prefix = ARTIFACTS / "report-compare"
    for old in ARTIFACTS.glob("report-compare-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-png", "-r", "50", str(pdf), str(prefix)], check=True, timeout=120)
    pages = sorted(ARTIFACTS.glob("report-compare-*.png"))
    assert len(pages) >= 5
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 2000 for p in pages)
    shutil.copy(pdf, ARTIFACTS / "report-compare.pdf")


def test_pdf_cuts_long_tables_and_says_so(evidence: cap.Capture, tmp_path: Path):
    require_pdf_tools()
    pdf = tmp_path / "cut.pdf"
    cap.teletap_report("--db", str(evidence.db), "--session", "1", "--format", "pdf", "--pdf-max-rows", "2",
                       "--out", str(pdf), "--generated-at", cap.GENERATED_AT)
    text = " ".join(pdf_text(pdf).split())
    flows = len(rows(evidence.db, "SELECT id FROM flows WHERE session_id = 1"))
    assert f"This printed table shows the first 2 of {flows} rows." in text
    first, *later = [r["id"] for r in rows(evidence.db, "SELECT id FROM flows WHERE session_id = 1 "
                                                        "ORDER BY request_time, id")]
    assert first[:8] in text and later[-1][:8] not in text.split("A.1 Flows", 1)[1].split("A.2", 1)[0]
