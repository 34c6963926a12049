"""``teletap decode FILE``: decode one captured body and print what it carries as JSON.

For an admin investigating a single body (saved from mitmweb, a HAR, or a support ticket): the same
decoders as live capture, so what this prints is what teletap stores.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from teletap.decoders import Limits, decode_request, decode_response

DEFAULT_URL = "https://decode.invalid/"


def result_json(result, *, include_body: bool = False) -> dict:
    out = {
        "format": result.format,
        "notes": result.notes,
        "error": result.error,
        "error_offset": result.error_offset,
        "bomb": result.bomb,
        "events": [dataclasses.asdict(e) for e in result.events],
    }
    if include_body:
        out["body_bytes"] = None if result.body is None else len(result.body)
    return out


@click.command("decode")
@click.argument("file", type=click.File("rb"))
@click.option("--content-type", "-t", help="Content-Type the body was sent with.")
@click.option("--content-encoding", "-e", help="Content-Encoding of the body as given (e.g. gzip, deflate).")
@click.option("--url", default=DEFAULT_URL, show_default=True,
              help="URL the body was sent to (path and query steer the decoder).")
@click.option("--method", default="POST", show_default=True)
@click.option("--header", "-H", "extra_headers", multiple=True, metavar="'NAME: VALUE'",
              help="Another request header (repeatable), e.g. -H 'APIKey: …'.")
@click.option("--response", is_flag=True, help="Decode as a response body (OneSettings/ECS configuration).")
@click.option("--status", type=int, default=200, show_default=True, help="Response status, with --response.")
@click.option("--max-output-bytes", type=int, default=Limits.max_output_bytes, show_default=True,
              help="Decompression limit for this body.")
def decode(file, content_type: str | None, content_encoding: str | None, url: str, method: str,
           extra_headers: tuple[str, ...], response: bool, status: int, max_output_bytes: int) -> None:
    """Decode FILE (a raw HTTP body, '-' for stdin) and print the events as JSON.

    Exit status 1 when (part of) the body could not be decoded; the JSON still says what was.
    """
    body = file.read()
    headers: list[tuple[str, str]] = []
    if content_type:
        headers.append(("Content-Type", content_type))
    if content_encoding:
        headers.append(("Content-Encoding", content_encoding))
    for h in extra_headers:
        name, sep, value = h.partition(":")
        if not sep:
            raise click.BadParameter(f"expected 'NAME: VALUE', got {h!r}", param_hint="--header")
        headers.append((name.strip(), value.strip()))
    limits = Limits(max_output_bytes=max_output_bytes)
    if response:
        result = decode_response(method, url, status, headers, body, limits)
    else:
        result = decode_request(method, url, headers, body, limits)
    click.echo(json.dumps(result_json(result, include_body=True), indent=2, ensure_ascii=False))
    if result.error:
        sys.exit(1)


__all__ = ["decode"]
