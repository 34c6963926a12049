"""teletap's mitmproxy addons, in the order mitmproxy should call them.

``addons`` is what mitmproxy loads, from ``teletap run`` or from the shim given to ``mitmdump -s`` /
``mitmweb -s`` (``teletap mitmproxy-script`` prints its path).
"""

from __future__ import annotations

from typing import Any

from .capture import Capture
from .recorder import PinnedPassthrough, Recorder
from .sinkhole import Sinkhole


class DecodedContentView:
    """Registers teletap's decoded view of 1DS/Aria/Application Insights bodies for mitmweb users."""

    def load(self, loader: Any) -> None:
        from . import contentview

        contentview.register()

    def done(self) -> None:
        from . import contentview

        contentview.unregister()


def make_addons() -> list[Any]:
    recorder = Recorder()
    # Sinkhole answers before Capture records, so a sinkholed flow is recorded with its flag.
    return [recorder, Sinkhole(recorder.matcher), Capture(recorder.submit), PinnedPassthrough(),
            DecodedContentView()]


class Teletap:
    """All of teletap's addons as one entry in mitmproxy's addon chain (``teletap run``).

    mitmproxy pays a context manager, a coroutine and a generator per chain entry on every hook of every
    flow; children listed in ``addons`` share their parent's. Five entries of their own cost the proxy
    ≈ 5 % more instructions per request than one (docs/benchmarks.md).
    """

    def __init__(self) -> None:
        self.addons = make_addons()


addons = make_addons()
