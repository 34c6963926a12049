"""``teletap report``: a DPIA evidence report from the evidence database."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import click

from .cli import DEFAULT_DB
from .report.render import DEFAULT_PDF_MAX_ROWS

FORMAT_NAMES = ("html", "md", "pdf", "json", "cnil-pia")


def _fail(message: str) -> None:
    click.echo(f"teletap report: {message}", err=True)
    sys.exit(2)


def _write(out: str, data: bytes) -> None:
    """Write atomically with mode 0600: a report names hosts, clients and redacted personal data."""
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(out).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.command("report", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(dir_okay=False),
              help="Evidence database to report on (opened read-only).")
@click.option("--session", "sessions", multiple=True, metavar="ID|LABEL",
              help="Session id or exact label to include, repeatable or comma-separated "
                   "(default: every session except the --compare base).")
@click.option("--since", metavar="TIME", help="Only flows and connections from this time on (ISO-8601, UTC).")
@click.option("--until", metavar="TIME", help="Only flows and connections before this time (ISO-8601, UTC).")
@click.option("--compare", metavar="BASE_SESSION",
              help="Session recorded before a mitigation: show what disappeared, remained and appeared.")
@click.option("--level", "levels", multiple=True, metavar="PRODUCT=LEVEL",
              help="Diagnostic data level in force during the capture, repeatable: office=required|optional|"
                   "neither, windows=security|required|enhanced|optional. Lists events sent beyond it.")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), default="html", show_default=True,
              help="html (self-contained), md, pdf (WeasyPrint), json, or cnil-pia (import into the CNIL PIA tool).")
@click.option("--out", metavar="PATH",
              help="Where to write the report ('-' for standard output). Default: teletap-report.<ext>.")
@click.option("--generated-at", metavar="TIME",
              help="Generation time to print (ISO-8601); fix it to make reruns byte-identical. Default: now.")
@click.option("--title", default="DPIA evidence report", show_default=True, help="Report title.")
@click.option("--pdf-max-rows", default=DEFAULT_PDF_MAX_ROWS, show_default=True, type=click.IntRange(min=0),
              help="PDF only: print at most this many rows per table (0: all) and say where a table is cut; "
                   "WeasyPrint needs about 0.1 s per page. Other formats always hold every row.")
@click.option("--templates", type=click.Path(file_okay=False, exists=True),
              help="Folder of templates overriding the bundled ones in reports/ (same file names).")
def report(db: str, sessions: tuple[str, ...], since: str | None, until: str | None, compare: str | None,
           levels: tuple[str, ...], fmt: str, out: str | None, generated_at: str | None, title: str,
           pdf_max_rows: int, templates: str | None) -> None:
    """Write a DPIA evidence report: what was sent where, which personal data, what could not be seen.

    Sections follow GDPR Art. 35(7); every table carries the SQL that produced it, and two runs on the
    same database with the same options (and --generated-at) give identical files.

    \b
    teletap report --session baseline --level office=neither --out baseline.html
    teletap report --session after --compare baseline --format pdf --out change.pdf
    """
    from .report import (
        EXTENSIONS,
        PdfUnavailable,
        ReportError,
        ReportOptions,
        Scope,
        build_report,
        parse_level,
        parse_time,
        render,
        resolve_sessions,
        table_count,
    )
    from .store import StoreError, connect

    db_path = Path(db).expanduser()
    try:
        parsed_levels = tuple(dict(parse_level(v) for v in levels).items())  # the last value per product wins
        since_n = parse_time(since, "--since") if since else None
        until_n = parse_time(until, "--until") if until else None
        stamp = (parse_time(generated_at, "--generated-at")[:19] + "Z" if generated_at
                 else dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    except ReportError as e:
        _fail(str(e))
    if since_n and until_n and since_n >= until_n:
        _fail(f"--since {since} is not before --until {until}")
    try:
        conn = connect(db_path, readonly=True)
    except StoreError as e:
        _fail(str(e))
    try:
        try:
            session_ids, base = resolve_sessions(conn, sessions, compare)
        except ReportError as e:
            _fail(str(e))
        scope = Scope(sessions=session_ids, since=since_n, until=until_n, levels=parsed_levels, base_session=base)
        options = ReportOptions(scope=scope, generated_at=stamp, title=title, database=db_path.name,
                                parameters={"format": fmt})
        # Progress on stderr, so '--out -' keeps stdout for the report itself.
        with click.progressbar(length=table_count(scope) + 1, label="building report", file=sys.stderr) as bar:
            model = build_report(conn, options, progress=bar.update)
            try:
                data = render(model, fmt, Path(templates) if templates else None, pdf_max_rows)
            except PdfUnavailable as e:
                _fail(str(e))
            bar.update(1)
    finally:
        conn.close()
    target = out or f"teletap-report{EXTENSIONS[fmt]}"
    if target == "-" and fmt == "pdf" and sys.stdout.isatty():
        _fail("refusing to write a PDF to the terminal; give --out FILE")
    _write(target, data)
    if target != "-":
        click.echo(f"wrote {fmt} report on session(s) {', '.join(map(str, session_ids))} to {target}", err=True)
