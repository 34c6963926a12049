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


addons = make_addons()
