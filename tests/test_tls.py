"""TLS (SPEC §13) with a CA the test makes: HTTPS on the edge, TLS on the core's gRPC port,
mutual TLS for gRPC callers and for the edge's channel to a core running apart, and certificates
re-read on reload (SIGHUP)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway_common import tls
from gateway_common.config import ConfigError, parse_config
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import start_gateway

MODELS = [{"id": "mock-chat", "task": "chat", "provider": "mock"}]
REQUEST = pb.ChatRequest(model="mock-chat", messages=[pb.ChatMessage(role="user", content="hi")])


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    dir: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    def issue(self, name: str, *, server: bool) -> tuple[Path, Path, int]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(self.ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path, cert.serial_number


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    p = Pki(ca, ca, ca, ca, ca, tmp_path, ca_key, ca_cert)
    p.cert, p.key, _ = p.issue("server", server=True)
    p.client_cert, p.client_key, _ = p.issue("client", server=False)
    return p


def _client_ssl(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


async def test_https_edge_and_tls_core_with_mutual_tls_for_grpc(pki: Pki) -> None:
    config = parse_config({"auth": {"enabled": False}, "models": MODELS, "listen": {
        "core_transport": "grpc",  # the edge calls the core over its TLS port, with its cert
        "tls": {"cert_file": str(pki.cert), "key_file": str(pki.key),
                "client_ca_file": str(pki.ca), "core_ca_file": str(pki.ca),
                "core_client_cert_file": str(pki.client_cert),
                "core_client_key_file": str(pki.client_key)}}})
    gw = await start_gateway(config, "grpc")
    try:
        https = gw.http.replace("http://", "https://")
        async with aiohttp.ClientSession() as s:
            async with s.post(https + "/v1/chat/completions", ssl=_client_ssl(pki), json={
                    "model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == 200  # through the edge's mutual-TLS channel to the core
            with pytest.raises(aiohttp.ClientError):
                async with s.get(gw.http + "/health"):  # plaintext: not spoken
                    pass
        ca = pki.ca.read_bytes()
        target = gw.grpc_target
        mutual = grpc.ssl_channel_credentials(ca, pki.client_key.read_bytes(),
                                              pki.client_cert.read_bytes())
        async with grpc.aio.secure_channel(target, mutual) as channel:
            reply = await pb_grpc.InferenceStub(channel).Chat(REQUEST, timeout=5)
            assert reply.choices
        # Without a client certificate the core refuses the connection.
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.InferenceStub(channel).Chat(REQUEST, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gw.stop()
        tls._RELOADABLE.clear()


async def test_certificates_are_reloaded(pki: Pki) -> None:
    config = parse_config({"auth": {"enabled": False}, "models": MODELS, "listen": {
        "tls": {"cert_file": str(pki.cert), "key_file": str(pki.key)}}})
    gw = await start_gateway(config, "local")
    try:
        port = int(gw.http.rsplit(":", 1)[1])

        def served_serial() -> int:
            import socket

            ctx = _client_ssl(pki)
            with socket.create_connection(("127.0.0.1", port)) as sock, \
                    ctx.wrap_socket(sock, server_hostname="localhost") as wrapped:
                der = wrapped.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number

        first = await asyncio.to_thread(served_serial)  # (the server runs in this loop)
        new_cert, new_key, serial = pki.issue("server2", server=True)
        pki.cert.write_bytes(new_cert.read_bytes())
        pki.key.write_bytes(new_key.read_bytes())
        assert await asyncio.to_thread(served_serial) == first  # not before the reload
        assert tls.reload() >= 2  # the edge's context and the core's port (what SIGHUP does)
        assert await asyncio.to_thread(served_serial) == serial
        # A reload that cannot read the files keeps the certificate in use.
        pki.key.write_text("not a key")
        tls.reload()
        assert await asyncio.to_thread(served_serial) == serial
    finally:
        await gw.stop()
        tls._RELOADABLE.clear()


@pytest.mark.parametrize(("tls_config", "key"), [
    ({"cert_file": "/nope.crt", "key_file": "/nope.key"}, "listen.tls.cert_file"),
    ({"cert_file": "CERT"}, "listen.tls.key_file"),
    ({"client_ca_file": "CERT"}, "listen.tls.client_ca_file"),
])
def test_a_tls_config_is_checked(pki: Pki, tls_config: dict[str, str], key: str) -> None:
    data = {k: str(pki.cert) if v == "CERT" else v for k, v in tls_config.items()}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({"models": MODELS, "listen": {"tls": data}})
