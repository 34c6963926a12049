"""The ``teletap`` command line."""

from __future__ import annotations

import gc
import importlib
import ipaddress
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import click

from . import __version__, resources
from .pool import MAX_INGEST_WORKERS

DEFAULT_DB = "teletap.db"


class LazyGroup(click.Group):
    """Subcommands that live in their own modules are imported only when used: ``teletap --help`` stays fast."""

    lazy: ClassVar[dict[str, tuple[str, str, str]]] = {
        "decode": ("teletap.cli_decode", "decode", "Decode one captured body and print its events as JSON."),
        "signatures": ("teletap.cli_signatures", "signatures",
                       "Lint, test, query, import and export endpoint signatures."),
        "import": ("teletap.cli_import", "import_", "Import HAR or mitmproxy flow files through the same pipeline."),
        "export": ("teletap.cli_import", "export", "Export captured evidence (HAR) for other tools."),
        "report": ("teletap.cli_report", "report", "Write a DPIA evidence report (HTML, Markdown, PDF, JSON, CNIL)."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr, _ = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][2]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=80)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="teletap")
def main() -> None:
    """teletap: an auditing proxy that records, decodes and documents what software sends home.

    \b
    Record:   teletap run --session "baseline"      (proxy on 127.0.0.1:8080, evidence in teletap.db)
    Explore:  teletap serve                          (Datasette on http://127.0.0.1:8001)
    """


def _fail(message: str) -> None:
    click.echo(f"teletap: {message}", err=True)
    sys.exit(2)


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(dir_okay=False),
              help="SQLite file to record into (created with mode 0600).")
@click.option("--listen-host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Use 0.0.0.0 on a gateway.")
@click.option("--listen-port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--mode", "modes", multiple=True, metavar="MODE",
              help="mitmproxy proxy mode, repeatable: regular (default), transparent, wireguard, socks5, "
                   "upstream:URL, reverse:URL, dns@PORT, … Give MODE@PORT for a mode's own port.")
@click.option("--session", default="", help="Label for this capture run, e.g. 'baseline, default settings'.")
@click.option("--sinkhole", "sinkholes", multiple=True, metavar="SELECTOR",
              help="Lab mode, repeatable: answer matching requests locally so nothing leaves: all, "
                   "category:C, signature:ID, vendor:V, undocumented.")
@click.option("--signatures", "signature_paths", multiple=True, type=click.Path(exists=True),
              help="Signature file or folder to use instead of the bundled set (repeatable).")
@click.option("--identifiers", type=click.Path(exists=True, dir_okay=False),
              help="CSV 'kind,value' of known identifiers and canaries to find in traffic.")
@click.option("--ignore-hosts", "ignore_hosts", multiple=True, metavar="REGEX",
              help="Pass matching hosts through without interception (still recorded with SNI and byte counts).")
@click.option("--learn-pinned", is_flag=True,
              help="Pass through hosts whose clients refused teletap's certificate (pinned apps keep working).")
@click.option("--confdir", type=click.Path(file_okay=False),
              help="Where mitmproxy keeps its CA (default ~/.mitmproxy).")
@click.option("--ingest-workers", default=1, show_default=True, type=click.IntRange(1, MAX_INGEST_WORKERS),
              help="Processes that decode and look for personal data in parallel (one writes the database). "
                   "Raise it on a busy gateway with spare cores.")
@click.option("--set", "set_options", multiple=True, metavar="OPTION=VALUE",
              help="Any mitmproxy or teletap option, repeatable (see 'mitmdump --options').")
@click.option("--verbose", "-v", is_flag=True, help="Print every flow, as mitmdump does.")
def run(db: str, listen_host: str, listen_port: int, modes: tuple[str, ...], session: str,
        sinkholes: tuple[str, ...], signature_paths: tuple[str, ...], identifiers: str | None,
        ignore_hosts: tuple[str, ...], learn_pinned: bool, confdir: str | None, ingest_workers: int,
        set_options: tuple[str, ...], verbose: bool) -> None:
    """Start the proxy and record every flow and connection into the database.

    Stop with Ctrl-C or SIGTERM: queued items are written and the session is closed.
    """
    for option in set_options:
        if "=" not in option:
            _fail(f"--set expects OPTION=VALUE, got {option!r}")
    _preflight(db, signature_paths, identifiers)

    args = ["--listen-host", listen_host, "--listen-port", str(listen_port)]
    for mode in modes:
        args += ["--mode", mode]
    for pattern in ignore_hosts:
        args += ["--ignore-hosts", pattern]
    teletap_options = {
        "teletap_db": db, "teletap_session": session, "teletap_learn_pinned": str(learn_pinned).lower(),
        # Hosts passed through are still recorded: teletap needs mitmproxy to report them as TCP flows.
        "show_ignored_hosts": "true", "flow_detail": "1" if verbose else "0",
        "teletap_ingest_workers": str(ingest_workers),
    }
    if identifiers:
        teletap_options["teletap_identifiers"] = identifiers
    if confdir:
        teletap_options["confdir"] = confdir
    for key, value in teletap_options.items():
        args += ["--set", f"{key}={value}"]
    for path in signature_paths:
        args += ["--set", f"teletap_signatures={path}"]
    for selector in sinkholes:
        args += ["--set", f"teletap_sinkhole={selector}"]
    for option in set_options:
        args += ["--set", option]

    from mitmproxy.tools import cmdline
    from mitmproxy.tools.dump import DumpMaster
    from mitmproxy.tools.main import run as run_mitmproxy

    from .addon import Teletap
    from .dispatch import IndexedAddonManager

    class TeletapMaster(DumpMaster):
        """mitmdump, with teletap's addons registered before the options are parsed (so ``--set`` of a
        teletap option is checked at once) and as one chain entry (docs/architecture.md, cli.py row), and
        events dispatched only to the addons that handle them (dispatch.py)."""

        def __init__(self, options: Any) -> None:
            super().__init__(options)
            IndexedAddonManager.install(self)
            self.addons.add(Teletap())

        async def running(self) -> None:
            await super().running()
            # What startup built (mitmproxy, teletap's signatures and sinkhole matcher) lives as long as the
            # proxy. Frozen, the collector stops walking it in every full collection: 3-6 % more requests/s
            # for teletap, nothing for plain mitmdump, whose heap is smaller (docs/benchmarks.md).
            gc.collect()
            gc.freeze()

    run_mitmproxy(TeletapMaster, cmdline.mitmdump, args)
    # Everything is written and closed by now (done hooks ran, the ingest worker was joined). Skipping the
    # interpreter's teardown avoids a native crash seen in mitmproxy_rs's DNS resolver at exit (about one
    # stop in three with DNS mode and teletap's worker process), which would turn a clean stop into SIGSEGV.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _preflight(db: str, signature_paths: tuple[str, ...], identifiers: str | None) -> None:
    """Check the database, signatures and identifiers before the proxy starts, with clear messages.

    Inside mitmproxy a failing script is only logged; an admin must not find out later that nothing was
    recorded.
    """
    from .store import StoreError, connect

    db_path = Path(db).expanduser()
    try:
        connect(db_path).close()
    except StoreError as e:
        _fail(str(e))
    _pipeline_or_fail(db_path, signature_paths, identifiers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def datasette_metadata_for(db: Path) -> dict[str, Any]:
    """The bundled metadata, addressed to the database name Datasette derives from the file name."""
    metadata = json.loads(resources.datasette_metadata_path().read_text())
    databases = metadata.get("databases", {})
    if "teletap" in databases and db.stem != "teletap":
        databases[db.stem] = databases.pop("teletap")
    return metadata


PASSWORD_HASH_ENV = "TELETAP_PASSWORD_HASH"  # `datasette hash-password` output; when set, serve requires a login


def _serve_auth(host: str) -> dict[str, Any] | None:
    """Metadata that requires a login, or None on loopback without a password; refuses what would be unsafe."""
    import importlib.util
    import os

    password_hash = os.environ.get(PASSWORD_HASH_ENV, "").strip()
    if not password_hash:
        if not is_loopback(host):
            _fail(f"refusing to serve the evidence on {host}: it holds what users sent. teletap serve binds "
                  "loopback only unless a login is required: set "
                  f"{PASSWORD_HASH_ENV} to a password hash made with 'datasette hash-password' (see "
                  "docs/datasette.md), or reach it through an SSH tunnel (ssh -L 8001:127.0.0.1:8001 …).")
        return None
    if not password_hash.startswith("pbkdf2_sha256$"):
        _fail(f"{PASSWORD_HASH_ENV} is not a password hash: create one with 'datasette hash-password' "
              "and put its output (pbkdf2_sha256$…) in the variable, not the password itself")
    if importlib.util.find_spec("datasette_auth_passwords") is None:
        _fail(f"{PASSWORD_HASH_ENV} is set but datasette-auth-passwords is not installed: "
              "pip install 'datasette-auth-passwords>=1.1'")
    # The hash stays in the environment ($env), never in the metadata file or /-/metadata.json. Every page
    # needs a logged-in actor: anonymous visitors are sent to /-/login (teletap's Datasette plugin).
    return {"plugins": {"datasette-auth-passwords": {"admin_password_hash": {"$env": PASSWORD_HASH_ENV}}},
            "allow": {"id": "*"}}


def _register_datasette_plugin() -> None:
    """teletap's own Datasette plugin runs in this process; registered here so wheels need no entry point."""
    from datasette.plugins import pm

    from .datasette_plugins import evidence

    if not pm.is_registered(evidence):
        pm.register(evidence, name="teletap")


@main.command()
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help=f"Address to serve on. Loopback only, unless {PASSWORD_HASH_ENV} requires a login.")
@click.option("--port", default=8001, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False),
              help="TLS certificate (PEM), so passwords and evidence do not cross the network in clear.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--setting", "settings", multiple=True, nargs=2, metavar="NAME VALUE",
              help="A Datasette setting, repeatable.")
def serve(db: str, host: str, port: int, ssl_certfile: str | None, ssl_keyfile: str | None,
          settings: tuple[tuple[str, str], ...]) -> None:
    """Explore the evidence in Datasette (read-only web UI and JSON API) while the proxy keeps writing.

    \b
    Charts: /-/teletap/charts. To serve on another address, require a login first:
      export TELETAP_PASSWORD_HASH="$(datasette hash-password)"   # user name: admin
      teletap serve --host 0.0.0.0 --ssl-certfile cert.pem --ssl-keyfile key.pem
    """
    auth = _serve_auth(host)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        _fail("--ssl-certfile and --ssl-keyfile go together")
    if not is_loopback(host) and ssl_certfile is None:
        click.echo(f"teletap: warning: serving on {host} without TLS: the password and the evidence cross the "
                   "network in clear; give --ssl-certfile/--ssl-keyfile or put a TLS reverse proxy in front",
                   err=True)
    from .store import StoreError, connect

    db_path = Path(db).expanduser()
    try:
        connect(db_path).close()  # create or upgrade it, so Datasette always sees the current schema
    except StoreError as e:
        _fail(str(e))
    metadata = datasette_metadata_for(db_path)
    if auth is not None:
        metadata.setdefault("plugins", {}).update(auth["plugins"])
        metadata["allow"] = auth["allow"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="teletap-metadata-", delete=False) as metadata_file:
        json.dump(metadata, metadata_file)
    args = ["serve", str(db_path), "--host", host, "--port", str(port), "--metadata", metadata_file.name,
            "--setting", "sql_time_limit_ms", "5000", "--setting", "facet_time_limit_ms", "1000"]
    if ssl_certfile and ssl_keyfile:
        args += ["--ssl-certfile", ssl_certfile, "--ssl-keyfile", ssl_keyfile]
    for name, value in settings:
        args += ["--setting", name, value]
    from datasette.cli import cli as datasette_cli
    from datasette.plugins import pm

    _register_datasette_plugin()
    if not pm.has_plugin("teletap-metadata-file"):
        pm.register(_forget_after_startup(Path(metadata_file.name)), name="teletap-metadata-file")
    try:
        datasette_cli.main(args=args, prog_name="teletap serve")
    finally:
        Path(metadata_file.name).unlink(missing_ok=True)


def _forget_after_startup(path: Path) -> Any:
    """A plugin that deletes the metadata file once Datasette has read it (it may hold the login's password
    hash). On SIGTERM uvicorn ends the process after its own shutdown, so a ``finally`` never runs."""
    from types import ModuleType

    from datasette import hookimpl

    @hookimpl
    def startup(datasette: Any) -> None:
        path.unlink(missing_ok=True)

    plugin = ModuleType("teletap_metadata_file")  # hashable, as pluggy needs; a namespace is not
    plugin.startup = startup  # type: ignore[attr-defined]
    return plugin


def _pipeline_or_fail(db_path: Path, signature_paths: tuple[str, ...], identifiers: str | None,
                      store_clear: bool = False) -> Any:
    from .pipeline import build_pipeline
    from .recorder import findings_key

    try:
        pipeline, _ = build_pipeline(signature_paths=signature_paths, identifiers=identifiers,
                                     findings_key=findings_key(db_path, ""), store_clear=store_clear)
    except (ValueError, OSError) as e:
        _fail(str(e))
    return pipeline


@main.command()
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--session", type=int, help="Only this session (default: all).")
@click.option("--signatures", "signature_paths", multiple=True, type=click.Path(exists=True),
              help="Signature file or folder to use instead of the bundled set (repeatable).")
@click.option("--identifiers", type=click.Path(exists=True, dir_okay=False),
              help="CSV 'kind,value' of known identifiers and canaries.")
@click.option("--findings-store-clear", is_flag=True, help="Store matched personal data in clear.")
@click.option("--deferred", is_flag=True,
              help="Only flows whose analysis was deferred while ingest was behind (flows.analysis = 'deferred').")
def redecode(db: str, session: int | None, signature_paths: tuple[str, ...], identifiers: str | None,
             findings_store_clear: bool, deferred: bool) -> None:
    """Re-run the current decoders, signatures and detectors over stored flows (after an upgrade)."""
    from .redecode import flows_where
    from .redecode import redecode as run_redecode
    from .store import StoreError, connect

    db_path = Path(db)
    try:
        conn = connect(db_path)
    except StoreError as e:
        _fail(str(e))
    where, params = flows_where(session, deferred)
    total = conn.execute(f"SELECT COUNT(*) FROM flows {where}", params).fetchone()[0]
    conn.close()
    pipeline = _pipeline_or_fail(db_path, signature_paths, identifiers, findings_store_clear)
    with click.progressbar(length=total, label="redecoding flows", file=sys.stderr) as bar:
        done = run_redecode(db_path, pipeline, session=session, deferred_only=deferred, progress=bar.update)
    click.echo(f"redecoded {done} flow(s) in {db_path}")


@main.command()
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--session", type=int, help="Only this session (default: all).")
def findings(db: str, session: int | None) -> None:
    """Summarise personal data found: by kind and destination, worst first."""
    from .store import StoreError, connect

    try:
        conn = connect(Path(db), readonly=True)
    except StoreError as e:
        _fail(str(e))
    where = "WHERE session_id = ?" if session is not None else ""
    rows = conn.execute(
        f"""SELECT kind, host, coalesce(data_flow, 'undocumented') AS data_flow, severity,
                   COUNT(*) AS n, COUNT(DISTINCT value_hash) AS distinct_values
            FROM findings {where}
            GROUP BY kind, host, data_flow, severity
            ORDER BY CASE severity WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, n DESC""",
        (session,) if session is not None else (),
    ).fetchall()
    conn.close()
    if not rows:
        click.echo("no personal data found" + (f" in session {session}" if session is not None else ""))
        return
    header = ("severity", "kind", "destination", "data flow", "findings", "distinct values")
    table = [header] + [(r["severity"], r["kind"], r["host"] or "-", r["data_flow"], str(r["n"]),
                         str(r["distinct_values"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@main.command("mitmproxy-script")
def mitmproxy_script() -> None:
    """Print the path of the script that loads teletap into mitmdump or mitmweb (-s PATH)."""
    click.echo(resources.mitmproxy_script_path())


if __name__ == "__main__":
    main()
