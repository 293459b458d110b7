"""``serve --ssl-certfile --ssl-keyfile`` serves wss:// and https:// (certificate made here)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..support import TIMEOUT, start_serve_process, token


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "football-realtime test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_wss_and_https_with_a_generated_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    trusted = ssl.create_default_context(cafile=str(cert))
    proc = start_serve_process(
        args=("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)), verify=trusted
    )
    try:
        assert proc.ws_url.startswith("wss://")
        url = f"{proc.ws_url}?token={token('tls-user')}"
        async with websockets.connect(url, ssl=trusted, open_timeout=TIMEOUT) as ws:
            hello = orjson.loads(await ws.recv())
            assert hello["data"]["status"] == "connected"
            assert hello["data"]["user_id"] == "tls-user"
            await ws.send('{"type":"heartbeat","id":1}')
            assert orjson.loads(await ws.recv())["event_type"] == "message_ack"
        async with httpx.AsyncClient(verify=trusted) as http:
            assert (await http.get(f"{proc.http_url}/realtime/health")).status_code == 200
        # A client that does not trust the certificate cannot connect; plain ws:// is
        # not served on the TLS port.
        with pytest.raises(ssl.SSLCertVerificationError):
            await websockets.connect(proc.ws_url, open_timeout=TIMEOUT)
        with pytest.raises((websockets.InvalidMessage, ConnectionError, EOFError)):
            await websockets.connect(proc.ws_url.replace("wss://", "ws://"), open_timeout=TIMEOUT)
    finally:
        proc.stop()
