"""``teletap run`` dispatches events only to the addons that handle them (dispatch.py); a user's script, whose
addons come and go as children of mitmproxy's script loader, must still see every flow, before teletap
records it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from .support import LOOPBACK, Upstream, rows, running_teletap

pytestmark = pytest.mark.e2e

SCRIPT = '''
from mitmproxy import ctx


class Mark:
    def request(self, flow):
        flow.request.headers["x-marked-by"] = "script"

    def response(self, flow):
        flow.response.headers["x-script-saw"] = flow.request.headers.get("x-marked-by", "nothing")
        flow.response.headers["x-dispatch"] = type(ctx.master.addons).__name__


addons = [Mark()]
'''


def test_a_users_script_runs_under_teletap_run(tmp_path: Path):
    script = tmp_path / "mark.py"
    script.write_text(SCRIPT)
    with Upstream() as upstream, running_teletap(tmp_path, "--set", f"scripts={script}") as tt:
        with httpx.Client(proxy=tt.proxy, timeout=10) as client:
            answers = [client.post(f"http://{LOOPBACK}:{upstream.port}/scripted/{i}", content=b"{}")
                       for i in range(3)]
        assert tt.stop() == 0
        received = upstream.requests
    assert [a.headers.get("x-script-saw") for a in answers] == ["script"] * 3
    assert {a.headers.get("x-dispatch") for a in answers} == {"IndexedAddonManager"}
    assert len(received) == 3
    recorded = rows(tt.db, "select request_headers, response_headers from flows where path like '/scripted/%'")
    assert len(recorded) == 3
    for flow in recorded:
        assert ["x-marked-by", "script"] in json.loads(flow["request_headers"])
        assert ["x-script-saw", "script"] in json.loads(flow["response_headers"])
