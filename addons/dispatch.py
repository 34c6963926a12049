"""mitmproxy's event dispatch, asking each addon only about the hooks it has.

mitmproxy's ``AddonManager.trigger_event`` walks the whole chain for every event: per addon a context
manager, a coroutine and two generators, whether or not the addon has the hook. mitmdump's chain holds 36
entries (``teletap run``'s 37), and an HTTP flow raises about eight events (each of its four lifecycle hooks
and the ``update`` that follows it), each handled by between none and 13 of them. Walking the rest cost
about 400 µs per flow in a microbenchmark (mitmproxy 11.0), about a third of plain mitmdump's CPU per
small request on the reference VM (docs/benchmarks.md, finding 12).

``IndexedAddonManager`` keeps, per hook name, the chain entries that have the hook, in chain order, and
dispatches to those alone, through mitmproxy's own ``invoke_addon`` and ``safecall``: the same calls in the
same order, the same error logging and ``AddonHalt``. Entries with children (``addons``, such as the
script loader's scripts) are always kept, since their children come and go: mitmproxy walks them on every
event as before. The index is rebuilt whenever ``add`` extends the chain or the chain is replaced (as
``remove`` does). What it does not follow is a top-level addon gaining a hook attribute after it was
added, which no addon of mitmproxy's or teletap's does.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import exceptions, hooks
from mitmproxy.addonmanager import AddonManager, safecall


class IndexedAddonManager(AddonManager):
    """An ``AddonManager`` whose ``trigger_event`` skips addons without the event's hook."""

    _indexed_chain: list[Any] | None = None
    _targets: dict[str, list[Any]]

    @classmethod
    def install(cls, master: Any) -> None:
        """Make ``master``'s addon manager dispatch by index.

        The manager is changed in place rather than replaced: ``Master.__init__`` creates it, connects it
        to the options' ``changed`` signal and fills its chain, and all of that stays as it is.
        """
        manager = master.addons
        if type(manager) is not AddonManager:
            raise TypeError(f"expected mitmproxy's AddonManager, found {type(manager).__name__}")
        manager.__class__ = cls
        manager._forget_index()

    def _forget_index(self) -> None:
        self._targets = {}
        self._indexed_chain = self.chain

    def add(self, *addons: Any) -> None:
        try:
            super().add(*addons)
        finally:
            self._forget_index()

    def targets(self, name: str) -> list[Any]:
        """The chain entries an event named ``name`` is dispatched to, in chain order."""
        if self.chain is not self._indexed_chain:  # replaced: mitmproxy's ``remove`` builds a new list
            self._forget_index()
        try:
            return self._targets[name]
        except KeyError:
            # Kept if the hook attribute exists at all: mitmproxy's invoke_addon then decides, as it would
            # have, whether to call it, skip it (a module of that name) or report it as not callable.
            found = [a for a in self.chain if hasattr(a, "addons") or getattr(a, name, None) is not None]
            self._targets[name] = found
            return found

    async def trigger_event(self, event: hooks.Hook) -> None:
        for addon in self.targets(event.name):
            try:
                with safecall():
                    await self.invoke_addon(addon, event)
            except exceptions.AddonHalt:
                return
