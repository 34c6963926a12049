"""teletap's mitmproxy addons, in the order mitmproxy should call them.

``addons`` is what mitmproxy loads, from ``teletap run`` or from the shim given to ``mitmdump -s`` /
``mitmweb -s`` (``teletap mitmproxy-script`` prints its path).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
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

    mitmproxy pays a context manager, a coroutine and a generator per chain entry it calls, and then looks
    the hook up on every child of the entry. ``teletap run``'s dispatch (``dispatch.py``) calls an entry
    only for the hooks it has, but an entry with children for every event. So this entry has no children: each
    hook one of teletap's addons implements becomes an attribute here, the addon's own method where only
    one implements it, or a call of each, in ``make_addons`` order, where several do. Measured in
    docs/benchmarks.md. (``mitmdump -s`` loads the same addons as a script's children instead.)
    """

    def __init__(self) -> None:
        from mitmproxy import hooks

        self.parts = make_addons()
        for name in hooks.all_hooks:  # every hook mitmproxy defines (its master has imported them all)
            handlers = [getattr(part, name) for part in self.parts if callable(getattr(part, name, None))]
            if any(inspect.iscoroutinefunction(h) for h in handlers):
                raise TypeError(f"{name}: async hooks need mitmproxy's own dispatch")
            if len(handlers) == 1:
                setattr(self, name, handlers[0])
            elif handlers:
                setattr(self, name, _in_order(handlers))


def _in_order(handlers: list[Callable[..., None]]) -> Callable[..., None]:
    def call_each(*args: Any) -> None:
        for handler in handlers:
            handler(*args)

    return call_each


addons = make_addons()
