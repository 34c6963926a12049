"""Headless Chromium walks the evidence UI: no JavaScript error, nothing fetched beyond loopback, screenshots.

Chromium is driven over the DevTools protocol (a websocket on loopback). A page fails on an uncaught
exception, a console.error, a browser log error (e.g. a script that could not be loaded: a CDN asset on an
offline auditing host) or a request to anything but the served Datasette. The first test proves the checker
catches each of those on pages made to fail.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from teletap.datasette_meta import QUERIES

from .support import LOOPBACK, free_port
from .test_datasette_queries import fill_evidence, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.e2e,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "datasette"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,900", "--hide-scrollbars")


@dataclass
class PageVisit:
    url: str
    status: int | None = None
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Chromium:
    """One headless Chromium with a fresh profile; one tab driven over the DevTools protocol."""

    def __init__(self, profile: Path):
        port = free_port()
        self.proc = subprocess.Popen([CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={profile}",
                                      f"--remote-debugging-address={LOOPBACK}", f"--remote-debugging-port={port}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, IndexError):
                pages = [t for t in httpx.get(f"http://{LOOPBACK}:{port}/json/list", timeout=2).json()
                         if t["type"] == "page"]
                ws_url = pages[0]["webSocketDebuggerUrl"]
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not offer a DevTools page (exit code {self.proc.poll()})")
            time.sleep(0.1)
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(ws_connect(ws_url, max_size=None, open_timeout=10))
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def _drain(self, until: str | None, timeout: float) -> None:
        """Collect events until `until` arrives (or, with None, until 0.5 s pass quietly)."""
        deadline = time.monotonic() + timeout
        while True:
            wait = 0.5 if until is None else deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError(f"no {until} within {timeout}s")
            try:
                message = json.loads(self.ws.recv(timeout=wait))
            except TimeoutError:
                if until is None:
                    return
                raise
            self._events.append(message)
            if message.get("method") == until:
                return

    def visit(self, url: str, screenshot: Path | None = None) -> PageVisit:
        self._events.clear()
        visit = PageVisit(url)
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            visit.errors.append(f"navigation failed: {result['errorText']}")
            return visit
        self._drain("Page.loadEventFired", 30)
        self._drain(None, 5)  # late errors: timers, deferred scripts
        for event in self._events:
            method, p = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = p["exceptionDetails"]
                visit.errors.append("uncaught: " + (details.get("exception", {}).get("description")
                                                    or details.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                visit.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                                 for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                visit.errors.append(f"log: {p['entry']['text']} ({p['entry'].get('url', '')})")
            elif method == "Network.requestWillBeSent":
                visit.requests.append(p["request"]["url"])
            elif method == "Network.responseReceived" and p.get("type") == "Document":
                visit.status = p["response"]["status"]
        if screenshot is not None:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                             clip={"x": 0, "y": 0, "width": max(size["width"], 1280),
                                   "height": min(max(size["height"], 900), 8000), "scale": 1})
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return visit

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()


def _only_loopback(visit: PageVisit, base: str) -> list[str]:
    origin = base.split("/", 3)[:3]
    return [u for u in visit.requests if u.split("/", 3)[:3] != origin and not u.startswith(("data:", "about:"))]


class _BadPages(http.server.BaseHTTPRequestHandler):
    missing_port = 0
    pages: ClassVar[dict[str, str]] = {
        "/throws": "<script>throw new Error('teletap test: uncaught')</script>",
        "/console": "<script>console.error('teletap test: console error')</script>",
        "/late": "<script>setTimeout(() => { throw new Error('teletap test: late') }, 200)</script>",
        "/missing-script": "<script src='http://127.0.0.1:{port}/cdn.js'></script>",
        "/clean": "<p>nothing wrong here</p>",
    }

    def do_GET(self) -> None:
        page = self.pages[self.path].replace("{port}", str(self.missing_port))
        body = f"<!doctype html><title>t</title><link rel='icon' href='data:,'>{page}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_checker_fails_on_javascript_errors(chromium: Chromium):
    _BadPages.missing_port = free_port()  # nothing listens there: like a CDN an offline host cannot reach
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _BadPages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://{LOOPBACK}:{server.server_address[1]}"
    try:
        assert chromium.visit(f"{base}/clean").errors == []
        assert any("teletap test: uncaught" in e for e in chromium.visit(f"{base}/throws").errors)
        assert any("teletap test: console error" in e for e in chromium.visit(f"{base}/console").errors)
        assert any("teletap test: late" in e for e in chromium.visit(f"{base}/late").errors)
        missing = chromium.visit(f"{base}/missing-script")
        assert any("ERR_CONNECTION_REFUSED" in e for e in missing.errors), missing.errors
        assert _only_loopback(missing, base)  # the request to another origin is reported too
    finally:
        server.shutdown()
        server.server_close()


# Canned query parameters that make each page show rows from the filled evidence.
QUERY_ARGS: dict[str, dict[str, str]] = {
    "events_beyond_level": {"level": "neither"},
    "session_changes": {"session_a": "1", "session_b": "2"},
}


def _pages() -> list[tuple[str, str, str]]:
    """(artefact name, path, text the page must show)."""
    pages = [
        ("index", "/", "teletap evidence"),
        ("database", "/evidence", "Endpoints contacted, by category and vendor"),
        ("flows-with-facets", "/evidence/flows", "Every HTTP(S) request that passed through the proxy"),
        ("events-with-facets", "/evidence/events", "documented_level"),
        ("findings-with-facets", "/evidence/findings", "severity"),
        ("flow-row", "/evidence/flows/f1", "2 events"),
        ("charts", "/-/teletap/charts", "Traffic over time, per category"),
    ]
    for name, spec in QUERIES.items():
        args = QUERY_ARGS.get(name, {})
        pages.append((f"query-{name}", f"/evidence/{name}" + ("?" + urlencode(args) if args else ""), spec["title"]))
    return pages


@pytest.fixture(scope="module")
def evidence_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("browser") / "evidence.db"
    fill_evidence(db)
    with serving(db) as base:
        yield base.rsplit("/", 1)[0]


@pytest.mark.parametrize(("name", "path", "text"), _pages(), ids=[p[0] for p in _pages()])
def test_page_loads_without_javascript_errors(chromium: Chromium, evidence_url: str, name: str, path: str,
                                              text: str):
    visit = chromium.visit(evidence_url + path, screenshot=ARTIFACTS / f"{name}.png")
    assert visit.status == 200, visit
    assert visit.errors == [], visit.errors
    assert _only_loopback(visit, evidence_url) == []
    body = chromium.evaluate("document.body.innerText")
    assert text in body and "Error 500" not in body
    assert (ARTIFACTS / f"{name}.png").stat().st_size > 1000


def test_facets_charts_and_folded_values_render(chromium: Chromium, evidence_url: str):
    chromium.visit(evidence_url + "/evidence/flows")
    facets = chromium.evaluate("[...document.querySelectorAll('.facet-info')].map(f => f.dataset.column)")
    assert {"category", "vendor", "data_flow", "host", "session_id"} <= set(facets)
    chromium.visit(evidence_url + "/evidence/flows/f1")
    # the long body is folded: closed <details> with a one-line summary
    assert chromium.evaluate("document.querySelector('details.teletap-fold').open") is False
    chromium.visit(evidence_url + "/-/teletap/charts?session=1&bucket=hour",
                   screenshot=ARTIFACTS / "charts-session-1.png")
    bars = chromium.evaluate("[...document.querySelectorAll('svg.teletap-chart rect title')].map(t => t.textContent)")
    assert "2026-01-01T10:00 · diagnostic-data: 2 flow(s)" in bars
    assert any(b.startswith("collector.example.invalid: 2 flows") for b in bars)
    assert any(b.startswith("email: 3 findings") for b in bars)
