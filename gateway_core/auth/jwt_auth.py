"""JWT bearer tokens, verified with pyjwt against configured keys, issuer and audience.

The accepted algorithms come from config and each key is bound to one of them by its type: an RSA
key verifies RS256 only, a P-256 key ES256 only, the secret from the environment HS256 only. The
token's ``alg`` header merely picks among those keys, so ``none``, an algorithm not configured,
and HS256 signed with a public key as the HMAC secret (the HS/RS confusion) are all refused.
``exp`` is required; ``iss`` and ``aud`` are checked when configured; a small leeway absorbs clock
skew. A claim (``models`` by default) lists the models, as a list, a space-separated string or "*".

Verified tokens are cached (by the hash of the token) until they expire, so a client reusing its
JWT pays for the signature check once.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway_common.config import ConfigError, JwtConfig
from gateway_core.auth.failures import unauthenticated
from gateway_core.auth.identity import Identity

_CACHE_MAX = 10_000
_MAX_SUBJECT = 100


@dataclass(frozen=True, slots=True)
class _Key:
    alg: str
    key: Any
    kid: str | None = None


def _alg_of(key: Any) -> str | None:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


def load_keys(config: JwtConfig) -> list[_Key]:
    """The verification keys the config names, each bound to its algorithm (ConfigError when a
    key cannot be read or none fits the configured algorithms)."""
    allowed = set(config.algorithms)
    keys: list[_Key] = []
    if config.public_key_file:
        try:
            pem = load_pem_public_key(Path(config.public_key_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError("auth.jwt.public_key_file", f"cannot read a PEM public key: {exc}"
                              ) from None
        alg = _alg_of(pem)
        if alg is None:
            raise ConfigError("auth.jwt.public_key_file", "must be an RSA or a P-256 EC key")
        if alg in allowed:
            keys.append(_Key(alg, pem))
    if config.jwks_file:
        try:
            jwks = jwt.PyJWKSet.from_json(Path(config.jwks_file).read_text(encoding="utf-8"))
        except (OSError, ValueError, jwt.PyJWKError, jwt.PyJWKSetError) as exc:
            raise ConfigError("auth.jwt.jwks_file", f"cannot read a JWKS: {exc}") from None
        for jwk in jwks.keys:
            alg = _alg_of(jwk.key)
            if alg is not None and alg in allowed:
                keys.append(_Key(alg, jwk.key, jwk.key_id))
    if "HS256" in allowed and config.secret_env:
        secret = os.environ.get(config.secret_env, "")
        if len(secret) < 32:
            raise ConfigError("auth.jwt.secret_env",
                              f"the environment variable {config.secret_env} must hold an HS256 "
                              "secret of at least 32 characters")
        keys.append(_Key("HS256", secret.encode()))
    if not keys:
        raise ConfigError("auth.jwt", "no key for the configured algorithms "
                          f"({', '.join(config.algorithms)}): set public_key_file, jwks_file "
                          "or (HS256) secret_env")
    return keys


def _models_of(claim: Any) -> list[str]:
    if claim is None:
        return []
    if isinstance(claim, str):
        return claim.split()
    if isinstance(claim, list) and all(isinstance(m, str) for m in claim):
        return claim
    raise unauthenticated("jwt_invalid")


class JwtVerifier:
    """Verifies a JWT and returns the caller's identity (see module doc)."""

    def __init__(self, config: JwtConfig) -> None:
        self.config = config
        self.keys = load_keys(config)
        self.algorithms = frozenset(k.alg for k in self.keys)
        # sha256(token) → (identity, exp)
        self._cache: dict[bytes, tuple[Identity, float]] = {}

    def verify(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if time.time() < cached[1] + self.config.leeway_seconds:
                return cached[0]
            del self._cache[digest]
        identity, exp = self._verify(token)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (identity, exp)
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthenticated("jwt_invalid") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise unauthenticated("jwt_algorithm")
        keys = [k for k in self.keys if k.alg == alg and (kid is None or k.kid in (None, kid))]
        if not keys:
            raise unauthenticated("jwt_signature")
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token, key.key, algorithms=[key.alg], audience=self.config.audience,
                    issuer=self.config.issuer, leeway=self.config.leeway_seconds,
                    options={"require": ["exp"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise unauthenticated("jwt_expired") from None
            except jwt.ImmatureSignatureError:
                raise unauthenticated("jwt_not_yet_valid") from None
            except jwt.InvalidIssuerError:
                raise unauthenticated("jwt_issuer") from None
            except jwt.InvalidAudienceError:
                raise unauthenticated("jwt_audience") from None
            except jwt.InvalidAlgorithmError:
                raise unauthenticated("jwt_algorithm") from None
            except jwt.InvalidTokenError:
                raise unauthenticated("jwt_invalid") from None
        if claims is None:
            raise unauthenticated("jwt_signature")
        subject = claims.get("sub")
        subject = subject if isinstance(subject, str) and subject else "anonymous"
        subject = subject[:_MAX_SUBJECT]
        models = _models_of(claims.get(self.config.models_claim))
        exp = claims["exp"]
        if not isinstance(exp, int | float):
            raise unauthenticated("jwt_invalid")
        return Identity.of_models(f"jwt:{subject}", subject, models, kind="jwt"), float(exp)
