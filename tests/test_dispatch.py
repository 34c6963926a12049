"""IndexedAddonManager must call exactly what mitmproxy's own dispatch calls, in the same order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import exceptions, options
from mitmproxy.addonmanager import AddonManager
from mitmproxy.master import Master
from mitmproxy.proxy.layers import http
from mitmproxy.test import tflow

from teletap.dispatch import IndexedAddonManager

HOOKS = ("requestheaders", "request", "response", "update")
BEHAVIOURS = ("record", "raise", "halt")


@dataclass
class AddonSpec:
    hooks: dict[str, str]  # hook name → behaviour
    children: list[AddonSpec] = field(default_factory=list)


def addon_specs(depth: int = 2) -> st.SearchStrategy[AddonSpec]:
    hooks = st.dictionaries(st.sampled_from(HOOKS), st.sampled_from(BEHAVIOURS), max_size=3)
    if depth == 0:
        return st.builds(AddonSpec, hooks)
    return st.builds(AddonSpec, hooks, st.lists(addon_specs(depth - 1), max_size=2))


# One step of a scenario: an event, an addon added or removed, a child added to an entry that has children, or
# the chain replaced by a new list.
steps = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(("requestheaders", "request", "response"))),
    st.tuples(st.just("add"), addon_specs(1)),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("adopt"), st.integers(0, 20), addon_specs(0)),
    st.tuples(st.just("reverse")),
)


class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.names = itertools.count()


def build(spec: AddonSpec, calls: Calls) -> Any:
    name = f"addon{next(calls.names)}"
    namespace: dict[str, Any] = {"name": name}
    for hook, behaviour in spec.hooks.items():
        namespace[hook] = _handler(calls, name, hook, behaviour)
    addon = type(name, (), namespace)()
    if spec.children:
        addon.addons = [build(child, calls) for child in spec.children]
    return addon


def _handler(calls: Calls, name: str, hook: str, behaviour: str) -> Any:
    def handle(self: Any, *args: Any) -> None:
        calls.log.append((name, hook))
        if behaviour == "raise":
            raise ValueError(f"{name} fails in {hook}")
        if behaviour == "halt":
            raise exceptions.AddonHalt

    return handle


@contextlib.asynccontextmanager
async def a_master() -> AsyncIterator[Master]:
    master = Master(options.Options())
    try:
        yield master
    finally:
        # Its log handler would otherwise outlive this event loop and fail on the next error logged.
        master._legacy_log_events.uninstall()


async def play(indexed: bool, chain: list[AddonSpec], scenario: list[tuple]) -> list[tuple[str, str]]:
    async with a_master() as master:
        return await _play(master, indexed, chain, scenario)


async def _play(master: Master, indexed: bool, chain: list[AddonSpec], scenario: list[tuple]) -> list[tuple[str, str]]:
    if indexed:
        IndexedAddonManager.install(master)
    calls = Calls()
    master.addons.add(*(build(spec, calls) for spec in chain))
    flow = tflow.tflow(resp=True)
    events = {"requestheaders": http.HttpRequestHeadersHook, "request": http.HttpRequestHook,
              "response": http.HttpResponseHook}
    for step in scenario:
        kind = step[0]
        if kind == "event":
            await master.addons.handle_lifecycle(events[step[1]](flow))
        elif kind == "add":
            master.addons.add(build(step[1], calls))
        elif kind == "remove" and master.addons.chain:
            master.addons.remove(master.addons.chain[step[1] % len(master.addons.chain)])
        elif kind == "adopt":
            parents = [a for a in master.addons.chain if hasattr(a, "addons")]
            if parents:
                # What the script loader does on a reload: its children change, the chain does not.
                parents[step[1] % len(parents)].addons.append(master.addons.register(build(step[2], calls)))
        elif kind == "reverse":
            master.addons.chain = master.addons.chain[::-1]  # a new list, as mitmproxy's own remove makes
        calls.log.append(("--", kind))
    return calls.log


@settings(max_examples=150, deadline=None)
@given(st.lists(addon_specs(), max_size=6), st.lists(steps, min_size=1, max_size=12))
def test_the_same_calls_in_the_same_order_as_mitmproxys_dispatch(chain: list[AddonSpec], scenario: list[tuple]):
    stock = asyncio.run(play(False, chain, scenario))
    indexed = asyncio.run(play(True, chain, scenario))
    assert indexed == stock


def test_an_addon_without_the_hook_is_not_asked():
    async def scenario() -> tuple[list[Any], list[Any]]:
        async with a_master() as master:
            IndexedAddonManager.install(master)
            calls = Calls()
            quiet, loud, parent = (build(AddonSpec({}), calls), build(AddonSpec({"request": "record"}), calls),
                                   build(AddonSpec({}, [AddonSpec({})]), calls))
            master.addons.add(quiet, loud, parent)
            assert isinstance(master.addons, IndexedAddonManager)
            return master.addons.targets("request"), [quiet, loud, parent]

    targets, (_quiet, loud, parent) = asyncio.run(scenario())
    assert targets == [loud, parent]  # an entry with children is always asked: they may change


def test_install_refuses_a_manager_it_does_not_know():
    async def scenario() -> None:
        async with a_master() as master:
            IndexedAddonManager.install(master)
            with pytest.raises(TypeError, match="IndexedAddonManager"):
                IndexedAddonManager.install(master)

    asyncio.run(scenario())
    assert issubclass(IndexedAddonManager, AddonManager)
