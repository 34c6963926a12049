"""The Teletap entry that `teletap run` puts in mitmproxy's addon chain."""

from __future__ import annotations

import pytest
from mitmproxy.test import taddons, tflow

from teletap import addon as addon_module
from teletap.addon import Teletap


def test_each_hook_is_the_parts_own_method_or_a_call_of_each_in_order(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[str, object]] = []

    class First:
        def requestheaders(self, flow: object) -> None:
            calls.append(("first", flow))

    class Second:
        def requestheaders(self, flow: object) -> None:
            calls.append(("second", flow))

        def response(self, flow: object) -> None:
            calls.append(("second response", flow))

    monkeypatch.setattr(addon_module, "make_addons", lambda: [First(), Second()])
    entry = Teletap()
    entry.requestheaders("f1")
    entry.response("f2")
    assert calls == [("first", "f1"), ("second", "f1"), ("second response", "f2")]
    assert entry.response.__self__ is entry.parts[1]  # one implementation: no wrapper in between
    assert not hasattr(entry, "request")  # nobody implements it: mitmproxy skips this entry for it


def test_async_hooks_are_refused(monkeypatch: pytest.MonkeyPatch):
    class Async:
        async def request(self, flow: object) -> None:
            pass

    monkeypatch.setattr(addon_module, "make_addons", lambda: [Async()])
    with pytest.raises(TypeError, match="request"):
        Teletap()


def test_the_real_parts_load_configure_and_record_through_the_entry(tmp_path):
    entry = Teletap()
    records: list = []
    capture = next(p for p in entry.parts if type(p).__name__ == "Capture")
    capture.submit = records.append  # the hooks hold bound methods of the parts; submit is looked up per call
    with taddons.context(entry) as tctx:
        tctx.configure(entry, teletap_db=str(tmp_path / "t.db"), teletap_sinkhole=["all"])
        flow = tflow.tflow()
        entry.requestheaders(flow)
        entry.request(flow)  # the sinkhole answers, before capture records
        entry.response(flow)
    assert flow.response is not None and flow.metadata["teletap_sinkholed"] == "all"
    (record,) = records
    assert record.sinkhole_rule == "all"
