"""vLLM's serving flags for deployments: HTTPS (--ssl-*), a proxy's path prefix
(--root-path), no access log (--disable-uvicorn-access-log) and no API docs
(--disable-fastapi-docs). The TLS and prefix tests start `python -m sarathi serve` itself,
as a user does, on the demo model."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, start_server, stop_server

KEY = "secret-key"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def https_server(tmp_path_factory) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(folder)
    log = open(folder / "server.log", "w+")  # noqa: SIM115 - read after the server stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarathi", "serve", "--port", "0", "--max-model-len", "256",
         "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--root-path", "/llm",
         "--disable-uvicorn-access-log", "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # the startup line, once the server listens
        match = re.search(r" on (https://127\.0\.0\.1:\d+) ", line)
        assert match, (line, (folder / "server.log").read_text())
        yield match.group(1), cert, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        finally:
            proc.kill()
        log.seek(0)
        # No line per request was logged (the log is checked after all the requests).
        text = log.read()
        log.close()
        assert '"GET /' not in text and '"POST /' not in text, text


def test_https_with_a_path_prefix_and_the_key(https_server):
    url, cert, _ = https_server
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(verify=str(cert), timeout=60) as http:
        # Requests come as the proxy forwards them, the prefix stripped; the open paths stay
        # open under the prefix uvicorn puts back, the others keep the key.
        assert http.get(url + "/health").status_code == 200
        assert http.get(url + "/v1/models").status_code == 401
        resp = http.get(url + "/v1/models", headers=auth)
        assert resp.status_code == 200 and resp.json()["data"][0]["id"] == "demo"
        body = {"model": "demo", "prompt": "Hi", "max_tokens": 2}
        resp = http.post(url + "/v1/completions", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        # The docs page links the OpenAPI document under the prefix, where clients see it.
        assert "/llm/openapi.json" in http.get(url + "/docs").text
        assert http.get(url + "/openapi.json").json()["servers"] == [{"url": "/llm"}]
    with pytest.raises(httpx.ConnectError):  # not the certificate the client trusts
        httpx.get(url + "/health", timeout=30)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url.replace("https", "http") + "/health", timeout=30)


def _serve(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sarathi", "serve", "--port", "0", *flags],
                          capture_output=True, text=True, timeout=240)  # fmt: skip


@pytest.mark.parametrize("flags,message", [
    (["--ssl-keyfile", "key.pem"], "--ssl-keyfile needs --ssl-certfile"),
    (["--ssl-ca-certs", "ca.pem", "--ssl-cert-reqs", "2"],
     "--ssl-ca-certs, --ssl-cert-reqs need --ssl-certfile"),
    (["--ssl-certfile", "cert.pem", "--ssl-cert-reqs", "1"], "needs --ssl-ca-certs"),
    (["--ssl-certfile", "/no/such.pem"], "cannot serve HTTPS with the --ssl-* files given"),
])  # fmt: skip
def test_tls_flags_that_cannot_serve_are_refused_before_the_model_loads(flags, message):
    r = _serve(*flags)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert message in r.stderr and "serving" not in r.stdout, r.stderr


@pytest.fixture(scope="module")
def no_docs() -> Iterator[LiveServer]:
    live = start_server(disable_fastapi_docs=True)
    yield live
    stop_server(live)


def test_the_docs_can_be_turned_off(no_docs, server):
    with httpx.Client(base_url=no_docs.url, timeout=60) as http:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert http.get(path).status_code == 404, path
        assert http.get("/v1/models").status_code == 200
    assert httpx.get(server.url + "/openapi.json", timeout=60).status_code == 200
