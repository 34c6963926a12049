"""teletap serve beyond loopback: only with a required login (datasette-auth-passwords), refused otherwise."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from .support import LOOPBACK, free_port, self_signed_cert, teletap_command, wait_for_port
from .test_datasette_queries import fill_evidence, serving

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"  # invented for the test


@pytest.fixture(scope="module")
def password_hash() -> str:
    utils = pytest.importorskip("datasette_auth_passwords.utils", reason="datasette-auth-passwords not installed")
    return utils.hash_password(PASSWORD)


def _login(client: httpx.Client, base_url: str, password: str) -> httpx.Response:
    form = client.get(f"{base_url}/-/login")
    assert form.status_code == 200
    token = re.search(r'name="csrftoken" value="([^"]+)"', form.text)
    assert token, form.text
    return client.post(f"{base_url}/-/login", data={"username": "admin", "password": password,
                                                    "csrftoken": token.group(1)})


@pytest.mark.parametrize("host", ["0.0.0.0", LOOPBACK])
def test_with_a_password_hash_every_page_needs_a_login(tmp_path: Path, password_hash: str, host: str):
    db = tmp_path / "evidence.db"
    fill_evidence(db)
    env = {**os.environ, "TELETAP_PASSWORD_HASH": password_hash}
    with serving(db, env=env, host=host) as base:
        root = base.rsplit("/", 1)[0]
        for path in ("/evidence/flows.json", "/evidence/personal_data.json", "/evidence/flows/f3",
                     "/-/teletap/charts", "/", "/-/metadata.json"):
            r = httpx.get(root + path, timeout=20)
            assert r.status_code == 302 and r.headers["location"] == "/-/login", (path, r.status_code)
        with httpx.Client(timeout=20) as client:
            refused = _login(client, root, "wrong password")
            assert "ds_actor" not in client.cookies and "Invalid username or password" in refused.text
            assert client.get(f"{base}/flows.json?_shape=array").status_code == 302
            accepted = _login(client, root, PASSWORD)
            assert accepted.status_code == 302 and "ds_actor" in client.cookies
            flows = client.get(f"{base}/flows.json?_shape=array").json()
            assert len(flows) == 6
            metadata = client.get(f"{root}/-/metadata.json").text
            assert password_hash not in metadata and "TELETAP_PASSWORD_HASH" in metadata  # only a reference
            assert client.get(f"{root}/-/teletap/charts").status_code == 200
        # API clients: HTTP Basic credentials, checked against the same hash
        api = httpx.get(f"{base}/personal_data.json?_shape=array", auth=("admin", PASSWORD), timeout=20)
        assert api.status_code == 200 and [r["kind"] for r in api.json()] == ["email", "email"]
        assert httpx.get(f"{base}/personal_data.json", auth=("admin", "wrong"), timeout=20).status_code == 302


def test_a_password_instead_of_a_hash_is_refused(tmp_path: Path):
    result = subprocess.run(teletap_command("serve", "--db", str(tmp_path / "t.db"), "--host", "0.0.0.0"),
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TELETAP_PASSWORD_HASH": PASSWORD})
    assert result.returncode == 2
    assert "is not a password hash" in result.stderr and "datasette hash-password" in result.stderr
    assert PASSWORD not in result.stderr  # the secret is not echoed


def test_refusal_without_a_password_says_how_to_configure_one(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "TELETAP_PASSWORD_HASH"}
    result = subprocess.run(teletap_command("serve", "--db", str(tmp_path / "t.db"), "--host", "0.0.0.0"),
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "refusing to serve the evidence on 0.0.0.0" in result.stderr
    assert "TELETAP_PASSWORD_HASH" in result.stderr and "ssh -L" in result.stderr
    assert not (tmp_path / "t.db").exists()  # refused before anything was created


def test_tls_with_a_login(tmp_path: Path, password_hash: str):
    cert, key = self_signed_cert(tmp_path / "tls", "localhost")
    db = tmp_path / "evidence.db"
    fill_evidence(db)
    port = free_port()
    proc = subprocess.Popen(teletap_command("serve", "--db", str(db), "--port", str(port), "--ssl-certfile", str(cert),
                                            "--ssl-keyfile", str(key)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TELETAP_PASSWORD_HASH": password_hash})
    try:
        wait_for_port(port, proc=proc)
        url = f"https://localhost:{port}/evidence/flows.json?_shape=array"
        r = httpx.get(url, auth=("admin", PASSWORD), verify=ssl.create_default_context(cafile=str(cert)), timeout=20)
        assert r.status_code == 200 and len(r.json()) == 6
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://{LOOPBACK}:{port}/", timeout=20)  # no plain HTTP on the TLS port
    finally:
        proc.terminate()
        proc.wait(10)


def test_certificate_without_key_is_refused(tmp_path: Path):
    cert, _ = self_signed_cert(tmp_path / "tls", "localhost")
    result = subprocess.run(teletap_command("serve", "--db", str(tmp_path / "t.db"), "--ssl-certfile", str(cert)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--ssl-certfile and --ssl-keyfile go together" in result.stderr
