"""The teletap command refuses bad input before the proxy starts, with messages an admin can act on."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .support import teletap_command


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(teletap_command(*args), capture_output=True, text=True, cwd=cwd, timeout=60)


def test_help_lists_every_command(tmp_path: Path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("run", "serve", "report", "import", "export", "decode", "signatures", "findings", "redecode",
                    "mitmproxy-script"):
        assert f"  {command} " in out.stdout


def test_run_refuses_a_file_that_is_not_a_database(tmp_path: Path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("shopping list\n" * 100)
    out = run("run", "--db", str(bogus), cwd=tmp_path)
    assert out.returncode == 2 and "not a usable SQLite database" in out.stderr
    assert bogus.read_text().startswith("shopping list")  # untouched


def test_run_refuses_a_bad_identifiers_file_with_its_line(tmp_path: Path):
    ids = tmp_path / "ids.csv"
    ids.write_text("name;value\nalice\n")
    out = run("run", "--db", str(tmp_path / "t.db"), "--identifiers", str(ids), cwd=tmp_path)
    assert out.returncode == 2 and f"{ids}:1" in out.stderr and "kind,value" in out.stderr


def test_run_refuses_a_broken_signature_file_with_its_position(tmp_path: Path):
    sig = tmp_path / "broken.yaml"
    sig.write_text("signatures:\n  - id: x\n    name: [unclosed\n")
    out = run("run", "--db", str(tmp_path / "t.db"), "--signatures", str(sig), cwd=tmp_path)
    assert out.returncode == 2 and "broken.yaml:4:1: yaml: invalid YAML" in out.stderr


def test_run_refuses_set_without_a_value(tmp_path: Path):
    out = run("run", "--db", str(tmp_path / "t.db"), "--set", "ssl_insecure", cwd=tmp_path)
    assert out.returncode == 2 and "--set expects OPTION=VALUE" in out.stderr


def test_mitmproxy_script_is_the_one_line_shim(tmp_path: Path):
    out = run("mitmproxy-script", cwd=tmp_path)
    path = Path(out.stdout.strip())
    assert out.returncode == 0 and path.is_file()
    assert path.read_text().strip().startswith("from teletap.addon import addons")
