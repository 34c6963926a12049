"""The Recorder addon: teletap's options, the ingest worker's lifecycle, and the operator's messages.

Capture and Sinkhole do the per-flow work; this addon validates configuration (``configure``), starts
recording when the proxy runs (``running``) and flushes and reports when it stops (``done``).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy import version as mitmproxy_version

from .ingest import ProcessIngest
from .pipeline import Pipeline, PipelineConfig, build_pipeline
from .pool import MAX_INGEST_WORKERS
from .records import Record
from .store import StoreError, connect

log = logging.getLogger("teletap")

# Options that decide how a flow is analysed: a run analyses the deferred flows of earlier sessions only if
# they were recorded with the same values.
_ANALYSIS_OPTIONS = ("teletap_signatures", "teletap_identifiers", "teletap_findings_store_clear",
                     "teletap_blank_findings", "teletap_findings_key", "teletap_max_body",
                     "teletap_max_response_body")

# Options whose change needs a new pipeline and session.
_PIPELINE_OPTIONS = {*_ANALYSIS_OPTIONS, "teletap_db", "teletap_ingest_workers", "teletap_defer_analysis"}

# mitmproxy options worth keeping in the session row: they describe how the evidence was gathered.
_RECORDED_MITMPROXY_OPTIONS = ("mode", "listen_host", "listen_port", "ignore_hosts", "allow_hosts",
                               "connection_strategy", "ssl_insecure", "confdir")


def findings_key(db_path: Path, key_path: str) -> bytes:
    """The secret behind findings' value hashes: equal values group, but the DB alone cannot reverse them.

    Kept in its own 0600 file (default: next to the DB) so the DB can be shared without it.
    """
    path = Path(key_path) if key_path else db_path.with_name(db_path.name + ".findings-key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as e:
        raise ValueError(f"{path}: the findings key must be hex") from e
    if len(key) < 16:
        raise ValueError(f"{path}: the findings key is shorter than 16 bytes")
    return key


class Recorder:
    def __init__(self) -> None:
        self.ingest: ProcessIngest | None = None
        self.pipeline: Pipeline | None = None  # in this process: the sinkhole's matcher
        self.pipeline_spec: dict[str, Any] = {}  # how the ingest process builds its own pipeline
        self.sigset: Any = None

    def load(self, loader: Any) -> None:
        loader.add_option("teletap_db", str, "teletap.db", "SQLite file the evidence is written to.")
        loader.add_option("teletap_session", str, "", "Label of this capture run, e.g. 'baseline, default settings'.")
        loader.add_option("teletap_signatures", Sequence[str], [],
                          "Signature files or folders to match against (default: the bundled set).")
        loader.add_option("teletap_identifiers", str, "",
                          "CSV (kind,value) of the organisation's known identifiers and planted canaries.")
        loader.add_option("teletap_findings_store_clear", bool, False,
                          "Store matched personal data in clear in the findings table (default: keyed hash "
                          "and redacted preview only).")
        loader.add_option("teletap_blank_findings", bool, False,
                          "Blank matched personal data in stored request bodies (hashes still cover the "
                          "original body).")
        loader.add_option("teletap_findings_key", str, "",
                          "File with the hex key for findings' value hashes (default: <db>.findings-key).")
        loader.add_option("teletap_max_response_body", int, 256 * 1024,
                          "Store at most this many bytes of each response body.")
        loader.add_option("teletap_queue_size", int, 10_000,
                          "Items the ingest queue holds before new ones are counted as unrecorded.")
        loader.add_option("teletap_queue_bytes", int, 256 * 1024 * 1024,
                          "Body bytes the ingest queue holds before new items are counted as unrecorded "
                          "(bounds the proxy's memory when ingest falls behind).")
        loader.add_option("teletap_ingest_workers", int, 1,
                          "Processes that decode flows and look for personal data in parallel; one of them "
                          "writes the database. Raise it on a gateway with spare cores when sessions report "
                          "'ingest queue full'.")
        loader.add_option("teletap_defer_analysis", bool, True,
                          "When ingest falls behind (its queue a quarter full), store flows as captured and "
                          "decode and scan them once it catches up, rather than lose them when the queue is "
                          "full. Never with teletap_blank_findings: bodies are blanked before they are stored.")

    def configure(self, updated: set[str]) -> None:
        if not updated & _PIPELINE_OPTIONS:
            return
        opts = ctx.options
        if opts.teletap_max_body < 0 or opts.teletap_max_response_body < 0:
            raise exceptions.OptionsError("teletap_max_body and teletap_max_response_body must be >= 0")
        if opts.teletap_queue_size < 1 or opts.teletap_queue_bytes < 1:
            raise exceptions.OptionsError("teletap_queue_size and teletap_queue_bytes must be at least 1")
        if not 1 <= opts.teletap_ingest_workers <= MAX_INGEST_WORKERS:
            raise exceptions.OptionsError(f"teletap_ingest_workers must be between 1 and {MAX_INGEST_WORKERS}")
        db_path = Path(opts.teletap_db).expanduser()
        try:
            connect(db_path).close()  # fail now, with a clear message, rather than once traffic flows
            spec = dict(
                signature_paths=list(opts.teletap_signatures), identifiers=opts.teletap_identifiers or None,
                findings_key=findings_key(db_path, opts.teletap_findings_key),
                store_clear=opts.teletap_findings_store_clear,
                config=PipelineConfig(max_request_body=opts.teletap_max_body,
                                      max_response_body=opts.teletap_max_response_body,
                                      blank_findings_in_bodies=opts.teletap_blank_findings),
            )
            pipeline, sigset = build_pipeline(**spec)
        except (StoreError, ValueError, OSError) as e:
            raise exceptions.OptionsError(f"teletap: {e}") from e
        self.pipeline, self.sigset, self.pipeline_spec = pipeline, sigset, spec
        if self.ingest is not None:
            # A new database, signature set or detector setting starts a new session, so each session
            # says exactly how its evidence was gathered.
            self._stop()
            self._start()

    def running(self) -> None:
        if self.ingest is None:
            self._start()

    def done(self) -> None:
        self._stop()

    # The Capture and Sinkhole addons call this for every record.
    def submit(self, record: Record) -> None:
        if self.ingest is not None:
            self.ingest.submit(record)

    def matcher(self) -> Any:
        return self.pipeline.matcher if self.pipeline else None

    def _start(self) -> None:
        opts = ctx.options
        assert self.pipeline is not None
        session_options = {k: getattr(opts, k) for k in sorted(opts.keys()) if k.startswith("teletap_")}
        session_options.update({k: getattr(opts, k) for k in _RECORDED_MITMPROXY_OPTIONS if k in opts})
        from .signatures import signature_rows

        ingest = ProcessIngest(
            Path(opts.teletap_db).expanduser(), self.pipeline_spec, queue_size=opts.teletap_queue_size,
            queue_bytes=opts.teletap_queue_bytes, workers=opts.teletap_ingest_workers,
            session_label=opts.teletap_session or None, session_options=session_options,
            signature_set_hash=self.sigset.hash, signature_rows=signature_rows(self.sigset),
            mitmproxy_version=mitmproxy_version.VERSION, defer_analysis=opts.teletap_defer_analysis,
            analysis_options=_ANALYSIS_OPTIONS,
        )
        try:
            session_id = ingest.start()
        except Exception as e:
            log.error("teletap: cannot record into %s: %s. Traffic passes unrecorded until this is fixed.",
                      opts.teletap_db, e)
            return
        self.ingest = ingest
        proxyserver = ctx.master.addons.get("proxyserver")
        listen = ", ".join(f"{a[0]}:{a[1]}" for a in proxyserver.listen_addrs()) if proxyserver else "?"
        ca = Path(opts.confdir).expanduser() / "mitmproxy-ca-cert.pem"
        _operator(f"teletap: recording session {session_id} into {ingest.db_path.resolve()}\n"
                  f"teletap: proxy listening on {listen} (modes: {', '.join(opts.mode)})\n"
                  f"teletap: CA certificate for clients to trust: {ca}")

    def _stop(self) -> None:
        if self.ingest is None:
            return
        ingest, self.ingest = self.ingest, None
        stats = ingest.stop()
        summary = (f"teletap: session {ingest.session_id} closed: {stats.recorded} item(s) recorded in "
                   f"{ingest.db_path}")
        if stats.unrecorded_total:
            reasons = ", ".join(f"{n} {reason}" for reason, n in stats.unrecorded.most_common())
            summary += f"; {stats.unrecorded_total} item(s) NOT recorded ({reasons})"
        if stats.deferred or stats.analysed_later:
            summary += (f"\nteletap: ingest fell behind: {stats.deferred} flow(s) were stored first, their analysis "
                        f"deferred; {stats.analysed_later} deferred flow(s) analysed while idle")
        if stats.awaiting_analysis:
            summary += (f"\nteletap: {stats.awaiting_analysis} stored flow(s) in {ingest.db_path} are not yet "
                        "decoded or scanned for personal data (flows.analysis = 'deferred'); the next run "
                        "on it with the same signatures and options analyses them, or now: teletap redecode "
                        f"--deferred --db {ingest.db_path} (with this run's --signatures and --identifiers)")
        _operator(summary)


def _operator(message: str) -> None:
    # Written straight to stderr: mitmdump's -q would hide log output, and the operator must see where the
    # evidence goes and whether anything was lost.
    print(message, file=sys.stderr, flush=True)


class PinnedPassthrough:
    """Optionally learns hosts whose clients refuse teletap's certificate and passes them through afterwards.

    Pinned applications then keep working; their connections are still recorded (as passthrough, with SNI
    and byte counts) because teletap turns on show_ignored_hosts.
    """

    def __init__(self) -> None:
        self.learned: set[str] = set()

    def load(self, loader: Any) -> None:
        loader.add_option("teletap_learn_pinned", bool, False,
                          "Pass through (without interception) hosts whose clients refused teletap's certificate.")

    def tls_failed_client(self, data: Any) -> None:
        try:
            sni = data.conn.sni
            if not ctx.options.teletap_learn_pinned or not sni or sni in self.learned:
                return
            self.learned.add(sni)
            pattern = "^" + re.escape(sni) + r":\d+$"
            ctx.options.update(ignore_hosts=[*ctx.options.ignore_hosts, pattern])
            log.warning("teletap: %s refused teletap's certificate; passing it through from now on", sni)
        except Exception:
            log.exception("teletap: could not learn pinned host")
