"""The built wheel installs into a fresh venv and finds its bundled data."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_wheel_installs_into_a_fresh_venv_with_bundled_data(tmp_path: Path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=600)
    (wheel,) = dist.glob("teletap-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900)
    help_text = subprocess.run([str(env_dir / "bin" / "teletap"), "--help"], check=True, capture_output=True,
                               text=True, cwd=tmp_path).stdout
    assert "teletap run" in help_text and "serve" in help_text
    probe = subprocess.run(
        [str(python), "-c",
         "import json, teletap, teletap.resources as r;"
         "print(json.dumps([teletap.__file__, str(r.data_root()), r.datasette_metadata_path().is_file(),"
         " sorted(p.name for p in r.signatures_dir().rglob('*.yaml'))[:3], r.mitmproxy_script_path().is_file()]))"],
        check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    import json

    package_file, data_root, has_metadata, some_signatures, has_shim = json.loads(probe)
    assert str(env_dir) in package_file and "site-packages" in package_file  # not the checkout
    assert data_root.endswith("teletap/_bundled")
    assert has_metadata and some_signatures and has_shim


def test_editable_install_finds_data_in_the_checkout():
    import teletap.resources as r

    assert r.data_root() == ROOT
    assert r.datasette_metadata_path() == ROOT / "datasette_metadata.json"
    assert r.mitmproxy_script_path().read_text().startswith("from teletap.addon import addons")


def test_datasette_metadata_is_generated_from_the_schema():
    from teletap import datasette_meta

    assert (ROOT / "datasette_metadata.json").read_text() == datasette_meta.render(), \
        "run: python -m teletap.datasette_meta"
