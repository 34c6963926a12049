"""Plain mitmdump with teletap's event dispatch (addons/dispatch.py), and nothing else of teletap's.

    python bench/mitmdump_indexed.py [mitmdump's arguments]

``teletap run`` dispatches each event only to the addons that handle it, which plain mitmdump does not. Against
plain mitmdump, teletap's ratio therefore includes that saving; against this baseline (``bench_ab.py
--baseline mitmdump-indexed``) it shows what teletap's own work costs the proxy.
"""

from __future__ import annotations

import sys
from typing import Any

from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import run

from teletap.dispatch import IndexedAddonManager


class IndexedDumpMaster(DumpMaster):
    def __init__(self, options: Any, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        IndexedAddonManager.install(self)


if __name__ == "__main__":
    run(IndexedDumpMaster, cmdline.mitmdump, sys.argv[1:])
