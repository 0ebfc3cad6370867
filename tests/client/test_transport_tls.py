"""The transport's TLS (client/transport.py): one client context per process, its CA bundle
read once however many transports a create or link opens, and used by both channels to a
server, HTTP and the secure WebSockets, against a real TLS server on a loopback port with a
certificate made for the test."""

from __future__ import annotations

import asyncio
import datetime
import http
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from sealpost.client.errors import ServerUnavailable
from sealpost.client.transport import Transport, tls_context


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Each time any TLS context reads trusted CAs, from now on (the shared one rebuilt)."""
    calls: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        calls.append(args or kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    tls_context.cache_clear()
    yield calls
    tls_context.cache_clear()


def test_every_transport_shares_one_context_whose_cas_are_read_once(
    ca_loads: list[object],
) -> None:
    async def three() -> list[Transport]:
        made = [Transport(u) for u in ("http://a.test", "https://b.test", "https://a.test")]
        for transport in made:
            await transport.close()
        return made

    made = asyncio.run(three())
    assert len(ca_loads) == 1
    assert all(t.tls is tls_context() for t in made)
    assert tls_context().verify_mode == ssl.CERT_REQUIRED and tls_context().check_hostname


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealpost test relay")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_http_and_the_secure_websocket_both_verify_with_the_transports_context(
    tmp_path: Path,
) -> None:
    cert_file, key_file = _certificate(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    trusting = ssl.create_default_context(cafile=str(cert_file))

    def plain_http(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None  # the WebSocket handshake goes on
        return connection.respond(http.HTTPStatus.OK, '{"over": "https"}')

    async def handler(connection: ServerConnection) -> None:
        await connection.wait_closed()

    async def scenario() -> None:
        async with serve(
            handler, "127.0.0.1", 0, ssl=server_tls, process_request=plain_http
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            url = f"https://127.0.0.1:{port}"
            async with Transport(url, tls=trusting) as transport:
                assert await transport.request("GET", "/v1/x", signed=False) == {"over": "https"}
                sealed = await transport.open_sealed()
                await sealed.close()
            # the process's context does not trust this certificate: neither channel opens
            async with Transport(url) as transport:
                with pytest.raises(ServerUnavailable):
                    await transport.request("GET", "/v1/x", signed=False)
                with pytest.raises(ServerUnavailable):
                    await transport.open_sealed()

    asyncio.run(asyncio.wait_for(scenario(), 30))
