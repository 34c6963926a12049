"""Where teletap's bundled data lives: inside the wheel, or in the checkout for an editable install."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_root() -> Path:
    """The folder holding ``signatures/``, ``reports/`` and ``datasette_metadata.json``."""
    for candidate in (_PACKAGE_DIR / "_bundled", _PACKAGE_DIR.parent):
        if (candidate / "datasette_metadata.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"teletap's bundled data (datasette_metadata.json, signatures/) was not found next to {_PACKAGE_DIR}; "
        "reinstall teletap"
    )


def signatures_dir() -> Path:
    return data_root() / "signatures"


def reports_dir() -> Path:
    return data_root() / "reports"


def datasette_metadata_path() -> Path:
    return data_root() / "datasette_metadata.json"


def mitmproxy_script_path() -> Path:
    """The one-line shim for ``mitmdump -s`` / ``mitmweb -s``."""
    return _PACKAGE_DIR / "shim" / "teletap_mitmproxy.py"
