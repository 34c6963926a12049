"""``teletap signatures …``: lint, test, match, import and export signature files."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import click

from .signatures import CATEGORIES, DATA_FLOWS, Matcher, SignatureError, SignatureSet, lint, parse_target


def _paths(paths: tuple[str, ...]) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    from .resources import signatures_dir

    return [signatures_dir()]


def _load(paths: tuple[str, ...]) -> SignatureSet:
    try:
        return SignatureSet.load(_paths(paths) if paths else None)
    except SignatureError as e:
        raise click.ClickException(str(e)) from None


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


def _date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> _dt.date | None:
    if value is None:
        return None
    try:
        return _dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a date YYYY-MM-DD, got {value!r}") from None


_signatures_option = click.option(
    "-s", "--signatures", "sig_paths", multiple=True, type=click.Path(exists=True),
    help="Signature file or folder (repeatable). Default: the bundled set.")


@click.group("signatures")
def signatures() -> None:
    """Lint, test, query, import and export endpoint signatures."""


@signatures.command("lint")
@click.argument("paths", nargs=-1, type=click.Path())
def lint_cmd(paths: tuple[str, ...]) -> None:
    """Check signature files (default: the bundled set); list every problem as file:line:column."""
    errors = lint(_paths(paths))
    for err in errors:
        click.echo(str(err))
    if errors:
        click.echo(f"{len(errors)} problem(s)", err=True)
        sys.exit(1)
    click.echo("ok", err=True)


@signatures.command("test")
@click.argument("paths", nargs=-1, type=click.Path())
def test_cmd(paths: tuple[str, ...]) -> None:
    """Run every signature's examples against the whole set (catches shadowed signatures too)."""
    from .signatures import run_examples

    errors = lint(_paths(paths))
    if errors:
        for err in errors:
            click.echo(str(err))
        click.echo(f"{len(errors)} problem(s); fix them before testing", err=True)
        sys.exit(1)
    sigset = SignatureSet.load(_paths(paths))
    count, failures = run_examples(sigset)
    for failure in failures:
        click.echo(str(failure))
    click.echo(f"{len(sigset.signatures)} signatures, {count} examples, {len(failures)} failure(s)", err=True)
    if failures:
        sys.exit(1)


@signatures.command("match")
@click.argument("targets", nargs=-1, required=True)
@_signatures_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def match_cmd(targets: tuple[str, ...], sig_paths: tuple[str, ...], as_json: bool) -> None:
    """What is this host? TARGET is a URL or host, optionally preceded by a method ("POST https://…")."""
    matcher = Matcher(_load(sig_paths))
    failed = False
    for target in targets:
        try:
            host, path, method, port = parse_target(target)
        except ValueError as e:
            click.echo(f"{target}: {e}", err=True)
            failed = True
            continue
        sig = matcher.match(host, path, method, port)
        if as_json:
            click.echo(json.dumps({"target": target, "signature_id": sig.id if sig else "undocumented",
                                   "category": sig.category if sig else None,
                                   "vendor": sig.vendor if sig else None,
                                   "data_flow": sig.data_flow if sig else None,
                                   "documentation_url": sig.documentation_url if sig else None}))
        elif sig is None:
            click.echo(f"{target}\tundocumented")
        else:
            click.echo("\t".join([target, sig.id, sig.category, sig.vendor, sig.data_flow,
                                  sig.documentation_url or "-"]))
    if failed:
        sys.exit(2)


@signatures.group("import")
def import_group() -> None:
    """Generate signature files from vendor endpoint lists."""


@import_group.command("m365")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write YAML here (default: stdout).")
@click.option("--version", "version", help="Endpoints version, if the file does not say (e.g. 2022072800).")
@click.option("--checked", callback=_date, help="Date the source was checked (default: today).")
def import_m365_cmd(file: str, output: str | None, version: str | None, checked: _dt.date | None) -> None:
    """Microsoft 365 endpoints web-service JSON → signatures (one per record id)."""
    from .signature_import import import_m365

    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
        report = import_m365(data, version=version, checked=checked)
    except ValueError as e:
        raise click.ClickException(f"{file}: {e}") from None
    for reason in report.skipped:
        click.echo(f"skipped: {reason}", err=True)
    header = (f"Generated by 'teletap signatures import m365' from {Path(file).name}.\n"
              "Source: Microsoft 365 endpoints web service (Microsoft documentation, CC BY 4.0).")
    _write(report.yaml(header), output)
    click.echo(f"{len(report.signatures)} signature(s)", err=True)


@import_group.command("hosts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--vendor", required=True, help="Who receives the traffic.")
@click.option("--category", required=True, type=click.Choice(list(CATEGORIES)))
@click.option("--data-flow", default="third-party", show_default=True, type=click.Choice(list(DATA_FLOWS)))
@click.option("--documentation-url", required=True, help="Where the list comes from (provenance).")
@click.option("--name", help="Name of the list (default: the file name).")
@click.option("--id", "signature_id", help="Signature id (default: hosts.<vendor>.<name>).")
@click.option("--checked", callback=_date, help="Date the source was checked (default: today).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write YAML here (default: stdout).")
def import_hosts_cmd(file: str, vendor: str, category: str, data_flow: str, documentation_url: str,
                     name: str | None, signature_id: str | None, checked: _dt.date | None,
                     output: str | None) -> None:
    """A hosts file or domain list → one signature covering every host."""
    from .signature_import import import_hosts

    with open(file, encoding="utf-8", errors="replace") as fh:
        report = import_hosts(fh, vendor=vendor, category=category, name=name or Path(file).name,
                              documentation_url=documentation_url, data_flow=data_flow, checked=checked,
                              signature_id=signature_id)
    for reason in report.skipped:
        click.echo(f"skipped: {reason}", err=True)
    if not report.signatures:
        raise click.ClickException(f"{file}: no hosts found")
    _write(report.yaml(f"Generated by 'teletap signatures import hosts' from {Path(file).name}."), output)


@signatures.command("export")
@click.argument("fmt", metavar="hosts|zeek-intel", type=click.Choice(["hosts", "zeek-intel"]))
@click.option("--category", type=click.Choice(list(CATEGORIES)), help="Only this category.")
@_signatures_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (default: stdout).")
def export_cmd(fmt: str, category: str | None, sig_paths: tuple[str, ...], output: str | None) -> None:
    """Export exact hosts for DNS blocking (hosts) or Zeek's Intel framework (zeek-intel)."""
    from .signature_import import export_hosts, export_zeek_intel

    sigset = _load(sig_paths)
    _write(export_hosts(sigset, category) if fmt == "hosts" else export_zeek_intel(sigset, category), output)
