"""Health, metrics, the OpenAPI document, attachments, and the command line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers import Client, Device, ServerProcess
from openapi_spec_validator import validate
from starlette.routing import Route, WebSocketRoute

from sealpost.crypto.sign import SigningKey
from sealpost.protocol.signing import DIGEST_HEADER, sign_request
from sealpost.server.app import create_app
from sealpost.server.config import ServerConfig
from sealpost.server.fanout.local import LocalFanout
from sealpost.server.storage.sqlite import SqliteStorage


def test_healthz_and_metrics(registered: Callable[..., Client]) -> None:
    alice = registered()
    assert alice.http.get("/healthz").json() == {"status": "ok", "database": True, "fanout": True}
    text = alice.http.get("/metrics").text
    assert "# TYPE sealpost_http_requests_total counter" in text
    assert 'route="/v1/accounts"' in text
    assert "sealpost_http_request_seconds_bucket" in text
    assert alice.device is not None
    # nothing identifying: no account id, no username-bearing path
    assert alice.device.account_id.hex() not in text
    assert "127.0.0.1" not in text


def test_every_route_is_in_openapi_with_its_parameters(
    server: ServerProcess, tmp_path: Path
) -> None:
    with Client(server.url) as client:
        document = client.http.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # a valid OpenAPI 3.1 document, every $ref resolving
    app = create_app(
        ServerConfig(data=tmp_path),
        storage=SqliteStorage(tmp_path / "db"),
        fanout=LocalFanout(),
        server_key=SigningKey.generate(os.urandom),
        log_key=SigningKey.generate(os.urandom),
        clock=lambda: 0,
        rng=os.urandom,
    )
    schemas = document["components"]["schemas"]
    sockets = document["x-websockets"]
    served_sockets = set()
    for route in app.routes:
        path = route.path
        if isinstance(route, WebSocketRoute):
            served_sockets.add(path)
            assert sockets[path]["client_frames"] and sockets[path]["close_codes"], path
            continue
        assert isinstance(route, Route)
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        for method in methods:
            operation = document["paths"][path][method]
            params = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
            assert {("path", name) for name in route.param_convertors} <= params, (path, params)
            for status, answer in operation["responses"].items():
                for content in answer.get("content", {}).values():
                    ref = content["schema"].get("$ref", "")
                    assert not ref or ref.rsplit("/", 1)[1] in schemas, (path, status)
            assert {"429", "500", "503"} <= set(operation["responses"]), path
            if operation["security"]:  # signed: all five headers
                assert any(len(r) == 5 for r in operation["security"]), path
    assert served_sockets == set(sockets) == {"/v1/stream", "/v1/sealed", "/v1/link"}
    messages = document["paths"]["/v1/messages"]["put"]
    assert ("header", "X-Sealpost-Delivery-Token") in {
        (p["in"], p["name"]) for p in messages["parameters"]
    }
    assert {"507", "409", "413"} <= set(messages["responses"])
    upload = document["paths"]["/v1/attachments"]["post"]
    assert [p["name"] for p in upload["parameters"]] == ["signature", "X-Sealpost-Content-SHA256"]
    assert {"408", "413", "507"} <= set(upload["responses"])
    assert "503" in document["paths"]["/v1/accounts/{username}"]["get"]["responses"]
    assert schemas["SendRequest"]["additionalProperties"] is False
    assert set(document["components"]["securitySchemes"]) == {
        "account",
        "device",
        "timestamp",
        "nonce",
        "signature",
    }


def _digest(blob: bytes) -> dict[str, str]:
    return {DIGEST_HEADER: hashlib.sha256(blob).hexdigest()}


def test_attachment_round_trip_and_limits(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--max-attachment", "300000")
    with Client(server.url, Device.generate()) as alice:
        assert alice.register("alice").status_code == 201
        blob = os.urandom(250_000)
        response = alice.request("POST", "/v1/attachments", content=blob, headers=_digest(blob))
        assert response.status_code == 201, response.text
        attachment_id = response.json()["id"]
        assert len(bytes.fromhex(attachment_id)) == 32
        fetched = alice.http.get(f"/v1/attachments/{attachment_id}")
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(blob).digest()
        huge = os.urandom(300_001)
        too_big = alice.request("POST", "/v1/attachments", content=huge, headers=_digest(huge))
        assert too_big.status_code == 413 and too_big.json()["error"] == "too_large"
        # streamed without Content-Length: the limit is enforced while streaming
        parts = [os.urandom(100_000) for _ in range(4)]
        assert alice.device is not None
        headers = sign_request(
            alice.device.keys.signing_key,
            alice.device.account_id,
            1,
            "POST",
            "/v1/attachments",
            b"".join(parts),
            now=int(time.time()),
            nonce=os.urandom(16),
        )
        headers |= _digest(b"".join(parts))
        chunked = alice.http.post("/v1/attachments", content=iter(parts), headers=headers)
        assert chunked.status_code == 413 and chunked.json()["error"] == "too_large"
        unsigned = alice.http.post("/v1/attachments", content=b"abc")
        assert unsigned.status_code == 401
        # a signature over other bytes: nothing is kept
        headers = sign_request(
            alice.device.keys.signing_key,
            alice.device.account_id,
            1,
            "POST",
            "/v1/attachments",
            b"other bytes",
            now=int(time.time()),
            nonce=os.urandom(16),
        )
        forged = alice.http.post(
            "/v1/attachments", content=b"these bytes", headers=headers | _digest(b"these bytes")
        )
        assert forged.status_code == 401
        # a signature over the digest declared, but other bytes sent
        headers = sign_request(
            alice.device.keys.signing_key,
            alice.device.account_id,
            1,
            "POST",
            "/v1/attachments",
            b"other bytes",
            now=int(time.time()),
            nonce=os.urandom(16),
        )
        mismatched = alice.http.post(
            "/v1/attachments", content=b"these bytes", headers=headers | _digest(b"other bytes")
        )
        assert mismatched.status_code == 400
        # no digest declared: refused before the body
        undeclared = alice.request("POST", "/v1/attachments", content=blob)
        assert undeclared.status_code == 400
    assert [p.name for p in (server.data / "blobs").iterdir()] == [attachment_id]


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
        return subprocess.run(
            [sys.executable, "-m", "sealpost.cli", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**base, **(env or {})},
            check=False,
        )

    missing = run("server")
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        "sealpost: no data directory: pass --data DIR or set SEALPOST_DATA"
    ]
    config = tmp_path / "c.toml"
    config.write_text("[server]\nport = 'eighty'\n")
    bad = run("server", "--data", str(tmp_path), "--config", str(config))
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    env_bad = run("server", env={"SEALPOST_DATA": str(tmp_path), "SEALPOST_MAX_FRAME": "big"})
    assert env_bad.returncode != 0 and "SEALPOST_MAX_FRAME" in env_bad.stderr
    with_tls_half = run("server", "--data", str(tmp_path), "--tls-cert", "x.pem")
    assert with_tls_half.returncode != 0 and "tls_key" in with_tls_half.stderr


def test_config_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[server]\nmax_queue_depth = 7\nport = 1\n")
    proc = ServerProcess(tmp_path / "data", tmp_path / "logs", "--config", str(config))
    proc.start()  # --port 0 from the helper wins over the file's port = 1
    try:
        assert proc.url.startswith("http://127.0.0.1:") and not proc.url.endswith(":1")
        key = (tmp_path / "data" / "server_key").stat()
        assert key.st_mode & 0o077 == 0
    finally:
        proc.stop()
