"""``teletap import`` (HAR, mitmproxy flow files) and ``teletap export har``."""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from . import __version__

DEFAULT_DB = "teletap.db"


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"teletap: {message}", err=True)
    sys.exit(code)


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().rstrip("b").strip()
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 256M)") from None


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(dir_okay=False),
              help="SQLite file to import into (created with mode 0600).")
@click.option("--session", "label", default="", help="Label for the import session (default: the file names).")
@click.option("--format", "fmt", type=click.Choice(["auto", "har", "mitmproxy"]), default="auto", show_default=True,
              help="File format; auto looks at the content (HAR may be gzip- or zlib-compressed, e.g. .zhar).")
@click.option("--signatures", "signature_paths", multiple=True, type=click.Path(exists=True),
              help="Signature file or folder to use instead of the bundled set (repeatable).")
@click.option("--identifiers", type=click.Path(exists=True, dir_okay=False),
              help="CSV 'kind,value' of known identifiers and canaries to find in traffic.")
@click.option("--findings-key", default="", type=click.Path(dir_okay=False),
              help="File with the hex key for findings' value hashes (default: <db>.findings-key).")
@click.option("--findings-store-clear", is_flag=True, help="Store matched personal data in clear.")
@click.option("--max-entry-size", default="256M", show_default=True, metavar="SIZE",
              help="Largest single HAR entry or flow accepted (memory is bounded by this, not by the file).")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes running the pipeline (decode, match, detect); 0: one per CPU, at most 8.")
def import_(files: tuple[Path, ...], db: str, label: str, fmt: str, signature_paths: tuple[str, ...],
            identifiers: str | None, findings_key: str, findings_store_clear: bool, max_entry_size: str,
            jobs: int) -> None:
    """Import HAR files (browsers, Fiddler, Charles, mitmproxy) and mitmproxy flow files.

    Every entry goes through the same decoders, signatures and detectors as live capture, into one import
    session. Each file is checked completely before anything of it is written: a malformed or truncated
    file is reported with its position and leaves the database untouched. Importing the same file again
    replaces its rows (no duplicates); an interrupted import is completed by running it again.
    """
    from .importer import DEFAULT_MAX_ENTRY_BYTES, FileInfo, import_files
    from .pipeline import build_pipeline
    from .recorder import findings_key as load_findings_key
    from .store import StoreError, connect

    max_bytes = _size(max_entry_size) if max_entry_size else DEFAULT_MAX_ENTRY_BYTES
    db_path = Path(db).expanduser()
    try:
        connect(db_path).close()
        pipeline, sigset = build_pipeline(signature_paths=signature_paths, identifiers=identifiers,
                                          findings_key=load_findings_key(db_path, findings_key),
                                          store_clear=findings_store_clear)
    except (StoreError, ValueError, OSError) as e:
        _fail(str(e))

    bars: list[Any] = []

    def close_bars() -> None:
        while bars:
            bars.pop().render_finish()

    def on_checking(path: Path, size: int) -> Callable[[int], None]:
        close_bars()
        bar = click.progressbar(length=max(size, 1), label=f"checking  {path.name}", file=sys.stderr)
        bars.append(bar)
        return bar.update

    def on_importing(info: FileInfo) -> Callable[[int], None]:
        close_bars()
        bar = click.progressbar(length=info.entries, label=f"importing {info.path.name}", file=sys.stderr,
                                show_pos=True)
        bars.append(bar)
        return bar.update

    options = {"signatures": list(signature_paths), "identifiers": identifiers or None,
               "findings_store_clear": findings_store_clear}
    try:
        result = import_files(db_path, list(files), pipeline, label=label or None, signature_set=sigset,
                              fmt=None if fmt == "auto" else fmt, max_entry_bytes=max_bytes,
                              session_options=options, on_checking=on_checking, on_importing=on_importing,
                              jobs=jobs or min(8, os.cpu_count() or 1))
    except (StoreError, sqlite3.Error, OSError) as e:
        close_bars()
        _fail(f"{db_path}: {e}")
    except KeyboardInterrupt:
        close_bars()
        _fail("interrupted: what was written is complete per flow; run the same import again to finish it", 130)
    close_bars()
    for f in result.files:
        if f.error:
            click.echo(f"teletap: {f.error}", err=True)
        else:
            click.echo(f"{f.info.path}: {f.info.entries} entries → {f.flows} flows, {f.events} events, "
                       f"{f.findings} findings" + (f", {f.other} other rows" if f.other else ""))
    if result.session_id is not None:
        click.echo(f"session {result.session_id} in {db_path}")
    if result.failed:
        sys.exit(1)


@click.group()
def export() -> None:
    """Export captured evidence for other tools."""


def _rows(db_path: Path, sessions: tuple[int, ...]) -> Iterator[dict]:
    from .store import connect

    conn = connect(db_path, readonly=True)
    try:
        where = f"WHERE session_id IN ({','.join('?' for _ in sessions)})" if sessions else ""
        # rowid order keyed by request time, read in pages: memory stays bounded whatever the DB size
        last: tuple[str, int] = ("", -1)
        while True:
            cond = ("AND" if where else "WHERE") + " (coalesce(request_time, ''), rowid) > (?, ?)"
            page = conn.execute(f"SELECT rowid AS _rowid, * FROM flows {where} {cond} "
                                "ORDER BY coalesce(request_time, ''), rowid LIMIT 500", (*sessions, *last)).fetchall()
            if not page:
                return
            for row in page:
                flow = dict(row)
                flow["_websocket"] = [dict(m) for m in conn.execute(
                    "SELECT direction, time, is_text, content FROM websocket_messages WHERE flow_id = ? ORDER BY id",
                    (flow["id"],))]
                yield flow
            last = (page[-1]["request_time"] or "", page[-1]["_rowid"])
    finally:
        conn.close()


@export.command("har")
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--session", "sessions", multiple=True, type=int, help="Only this session (repeatable; default: all).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="HAR file to write ('-' for standard output).")
def export_har(db: str, sessions: tuple[int, ...], out: Path) -> None:
    """Write stored flows as HAR 1.2 (bodies as stored; base64 where binary).

    Bodies are those stored (content-encoding removed, at most the configured size); the hashes and sizes
    of the bodies as sent are kept in each entry's ``_teletap`` object, which other tools ignore.
    """
    from .har import write_har
    from .store import StoreError

    db_path = Path(db).expanduser()
    try:
        if str(out) == "-":
            count = write_har(sys.stdout, _rows(db_path, sessions), creator_version=__version__)
        else:
            # Written next to the target, then renamed: a failed export never leaves a half HAR behind.
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    count = write_har(f, _rows(db_path, sessions), creator_version=__version__)
                os.chmod(tmp, 0o600)  # the HAR holds what users sent, like the DB
                os.replace(tmp, out)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except StoreError as e:
        _fail(str(e))
    except sqlite3.Error as e:
        _fail(f"{db_path}: {e}")
    except BrokenPipeError:
        sys.stderr.close()  # the reader of --out - went away (e.g. | head): not an error worth a message
        sys.exit(1)
    except OSError as e:
        _fail(f"{out}: {e.strerror or e}")
    if str(out) != "-":
        click.echo(f"{count} flow(s) written to {out}", err=True)
