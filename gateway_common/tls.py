"""TLS for the edge's HTTPS listener, the core's gRPC port and the edge's channel to a core
running apart (``listen.tls``), and the reload of certificates on SIGHUP.

The HTTPS listener keeps one ``ssl.SSLContext``: a reload loads the new certificate into it, and
new connections present it (open ones keep theirs). The gRPC port uses grpc's dynamic server
credentials: on each new connection it asks ``ServerCertificates.fetch``, which hands grpc the
files read at the last reload.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import grpc

from gateway_common.config import TlsConfig

log = logging.getLogger(__name__)

# Every live TLS piece of this process, reloaded together on SIGHUP.
_RELOADABLE: list[Any] = []


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def edge_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The HTTPS context of the edge's listener; None without ``cert_file``."""
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert tls.cert_file is not None and tls.key_file is not None
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    _RELOADABLE.append(_EdgeReload(ctx, tls))
    return ctx


class _EdgeReload:
    def __init__(self, ctx: ssl.SSLContext, tls: TlsConfig) -> None:
        self.ctx = ctx
        self.tls = tls

    def reload(self) -> None:
        assert self.tls.cert_file is not None and self.tls.key_file is not None
        self.ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)


class ServerCertificates:
    """What the core's gRPC port presents (and which client CA it asks for), as last read."""

    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self.config = self._load()
        self.fresh = False

    def _load(self) -> Any:
        key, cert = _read(self.tls.key_file), _read(self.tls.cert_file)
        assert key is not None and cert is not None
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=_read(self.tls.client_ca_file))

    def reload(self) -> None:
        self.config = self._load()
        self.fresh = True

    def fetch(self) -> Any:
        """grpc's question on a new connection: a new configuration, or None (keep the last)."""
        if not self.fresh:
            return None
        self.fresh = False
        return self.config


def core_credentials(tls: TlsConfig) -> grpc.ServerCredentials | None:
    """The credentials of the core's gRPC port; None without ``cert_file``."""
    if not tls.enabled:
        return None
    certs = ServerCertificates(tls)
    _RELOADABLE.append(certs)
    return grpc.dynamic_ssl_server_credentials(
        certs.config, certs.fetch, require_client_authentication=bool(tls.client_ca_file))


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials | None:
    """The edge's credentials for a core running apart; None: a plaintext channel."""
    if not (tls.core_ca_file or tls.core_client_cert_file):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.core_ca_file),
        private_key=_read(tls.core_client_key_file),
        certificate_chain=_read(tls.core_client_cert_file))


def reload() -> int:
    """Re-read every certificate in use (SIGHUP); how many were reloaded. A piece that fails
    keeps what it had, and says why in the log."""
    done = 0
    for piece in _RELOADABLE:
        try:
            piece.reload()
            done += 1
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("TLS reload failed, keeping the previous certificate: %s", exc)
    if _RELOADABLE:
        log.info("reloaded %d TLS certificate(s)", done)
    return done
