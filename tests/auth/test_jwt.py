"""JWT mode: RS256 from a PEM file, ES256 from a JWKS file, HS256 from the environment; issuer,
audience, expiry and not-before with leeway; pinned algorithms (none and HS/RS confusion refused);
the models claim; stored tokens still working beside JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from gateway_common.config import ConfigError, JwtConfig
from gateway_core.auth.jwt_auth import JwtVerifier
from inference_gateway.v1 import admin_pb2 as apb
from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import AuthGateway, auth_config, bearer, chat, failures, reason_of
from tests.conftest import GatewayFactory

ISSUER = "https://issuer.example"
AUDIENCE = "inference-gateway"
HS_SECRET = "a-development-secret-of-more-than-32-chars"


@dataclass
class Keys:
    rsa_key: rsa.RSAPrivateKey
    other_rsa: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    pem_file: Path
    jwks_file: Path
    pem: bytes


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("jwt")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    (d / "rsa.pem").write_bytes(pem)
    jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    (d / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ec-1", "use": "sig"}]}))
    return Keys(rsa_key, rsa.generate_private_key(public_exponent=65537, key_size=2048), ec_key,
                d / "rsa.pem", d / "jwks.json", pem)


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-reports", "iat": now,
                            "nbf": now, "exp": now + 300, "models": ["mock-chat"]}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], key: bytes | None = None) -> str:
    """A token built by hand: alg=none (no key) or HS256 with whatever bytes as the secret."""
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if key is None:
        return signing + "."
    return signing + "." + _b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())


def jwt_auth(keys: Keys, **over: Any) -> dict[str, Any]:
    return {"jwt": {"enabled": True, "algorithms": ["RS256", "ES256"], "issuer": ISSUER,
                    "audience": AUDIENCE, "public_key_file": str(keys.pem_file),
                    "jwks_file": str(keys.jwks_file), "leeway_seconds": 5, **over}}


@pytest.fixture
async def jwt_gw(gateway_factory: GatewayFactory, tmp_path: Path, keys: Keys
                 ) -> AsyncIterator[AuthGateway]:
    gw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data",
                                                              **jwt_auth(keys)))
    yield gw
    await gw.channel.close()


def rs(keys: Keys, **over: Any) -> str:
    return jwt.encode(claims(**over), keys.rsa_key, algorithm="RS256")


async def test_valid_jwts_are_accepted(jwt_gw: AuthGateway, keys: Keys) -> None:
    inf = jwt_gw.inference
    assert (await inf.Chat(chat(), metadata=bearer(rs(keys)), timeout=5)).choices
    es = jwt.encode(claims(models="mock-chat mock-embedding"), keys.ec_key, algorithm="ES256",
                    headers={"kid": "ec-1"})
    assert (await inf.Chat(chat(), metadata=bearer(es), timeout=5)).choices
    # Clock skew within the leeway.
    skewed = rs(keys, nbf=int(time.time()) + 3, exp=int(time.time()) - 2)
    assert (await inf.Chat(chat(), metadata=bearer(skewed), timeout=5)).choices
    # Stored tokens work beside JWTs.
    assert (await inf.Chat(chat(), metadata=bearer(jwt_gw.token), timeout=5)).choices
    rows = (await jwt_gw.admin_stub.QueryUsage(apb.QueryUsageRequest(
        group_by=apb.QueryUsageRequest.GROUP_BY_TOKEN), metadata=jwt_gw.admin_md)).rows
    assert {r.token_id: r.requests for r in rows}["jwt:svc-reports"] == 3


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong-issuer", "jwt_issuer"),
        ("no-issuer", "jwt_invalid"),
        ("wrong-audience", "jwt_audience"),
        ("other-key", "jwt_signature"),
        ("tampered", "jwt_signature"),
        ("alg-none", "jwt_algorithm"),
        ("hs-with-rsa-public-key", "jwt_algorithm"),
        ("rs512", "jwt_algorithm"),
        ("expired", "jwt_expired"),
        ("not-yet-valid", "jwt_not_yet_valid"),
        ("no-exp", "jwt_invalid"),
        ("unknown-kid", "jwt_signature"),
        ("garbage", "jwt_invalid"),
        ("models-not-a-list", "jwt_invalid"),
    ],
)
async def test_bad_jwts_are_refused(jwt_gw: AuthGateway, keys: Keys, case: str,
                                    reason: str) -> None:
    now = int(time.time())
    makers: dict[str, Callable[[], str]] = {
        "wrong-issuer": lambda: rs(keys, iss="https://evil.example"),
        "no-issuer": lambda: rs(keys, iss=None),
        "wrong-audience": lambda: rs(keys, aud="someone-else"),
        "other-key": lambda: jwt.encode(claims(), keys.other_rsa, algorithm="RS256"),
        "tampered": lambda: _tamper(rs(keys)),
        "alg-none": lambda: unsigned({"alg": "none", "typ": "JWT"}, claims(models=["*"])),
        "hs-with-rsa-public-key": lambda: unsigned({"alg": "HS256", "typ": "JWT"}, claims(),
                                                   keys.pem),
        "rs512": lambda: jwt.encode(claims(), keys.rsa_key, algorithm="RS512"),
        "expired": lambda: rs(keys, exp=now - 60),
        "not-yet-valid": lambda: rs(keys, nbf=now + 60),
        "no-exp": lambda: rs(keys, exp=None),
        "unknown-kid": lambda: jwt.encode(claims(), keys.ec_key, algorithm="ES256",
                                          headers={"kid": "ec-9"}),
        "garbage": lambda: "abc.def.ghi",
        "models-not-a-list": lambda: rs(keys, models=7),
    }
    token = makers[case]()
    before = failures(reason)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jwt_gw.inference.Chat(chat(), metadata=bearer(token), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(info.value) == f"auth_{reason}"
    assert failures(reason) == before + 1
    assert token not in (info.value.details() or "")


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["models"] = ["*"]
    return f"{header}.{_b64(json.dumps(body).encode())}.{signature}"


async def test_the_models_claim_scopes_the_jwt(jwt_gw: AuthGateway, keys: Keys) -> None:
    from inference_gateway.v1 import inference_pb2 as pb

    md = bearer(rs(keys, models=["mock-chat"]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jwt_gw.inference.Embed(pb.EmbedRequest(model="mock-embedding", inputs=["x"]),
                                     metadata=md, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await jwt_gw.models.ListModels(pb.ListModelsRequest(), metadata=md)
    assert [m.id for m in listed.models] == ["mock-chat"]
    everything = await jwt_gw.models.ListModels(pb.ListModelsRequest(),
                                                metadata=bearer(rs(keys, models="*")))
    assert len(everything.models) == 10
    nothing = await jwt_gw.models.ListModels(pb.ListModelsRequest(),
                                             metadata=bearer(rs(keys, models=None)))
    assert not nothing.models
    # A JWT is never an admin credential.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jwt_gw.admin_stub.ListTokens(apb.ListTokensRequest(), metadata=md)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_hs256_for_development_and_no_confusion_with_rsa(
    gateway_factory: GatewayFactory, tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGW_TEST_JWT_SECRET", HS_SECRET)
    gw = await open_auth_gateway(gateway_factory, auth_config(
        tmp_path / "data", **jwt_auth(keys, algorithms=["RS256", "HS256"],
                                      secret_env="IGW_TEST_JWT_SECRET", jwks_file=None)))
    try:
        hs = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
        assert (await gw.inference.Chat(chat(), metadata=bearer(hs), timeout=5)).choices
        assert (await gw.inference.Chat(chat(), metadata=bearer(rs(keys)), timeout=5)).choices
        # HS256 "signed" with the RSA public key as the HMAC secret: the HS key is the secret.
        forged = unsigned({"alg": "HS256", "typ": "JWT"}, claims(models=["*"]), keys.pem)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gw.inference.Chat(chat(), metadata=bearer(forged), timeout=5)
        assert reason_of(info.value) == "auth_jwt_signature"
        es = jwt.encode(claims(), keys.ec_key, algorithm="ES256")  # ES256 not configured here
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gw.inference.Chat(chat(), metadata=bearer(es), timeout=5)
        assert reason_of(info.value) == "auth_jwt_algorithm"
    finally:
        await gw.channel.close()


async def test_jwt_over_http_with_the_openai_sdk(jwt_gw: AuthGateway, keys: Keys) -> None:
    base = f"{jwt_gw.gw.http}/v1"
    good = openai.AsyncOpenAI(base_url=base, api_key=rs(keys), max_retries=0)
    resp = await good.chat.completions.create(
        model="mock-chat", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "This is a mock reply to: hi"
    expired = openai.AsyncOpenAI(base_url=base, api_key=rs(keys, exp=int(time.time()) - 60),
                                 max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await expired.chat.completions.create(
            model="mock-chat", messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.headers["WWW-Authenticate"] == "Bearer"
    assert info.value.message.endswith("the JWT has expired")


def test_config_without_keys_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no key for the configured algorithms"):
        JwtVerifier(JwtConfig(enabled=True, algorithms=["RS256"]))
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"auth\.jwt\.public_key_file"):
        JwtVerifier(JwtConfig(enabled=True, public_key_file=str(tmp_path / "bad.pem")))
    monkeypatch.setenv("IGW_TEST_JWT_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 32 characters"):
        JwtVerifier(JwtConfig(enabled=True, algorithms=["HS256"],
                              secret_env="IGW_TEST_JWT_SECRET"))


@pytest.mark.parametrize(
    ("jwt_config", "expected"),
    [
        ({"enabled": True, "algorithms": []}, "auth.jwt.algorithms: must name"),
        ({"enabled": True, "algorithms": ["RS256"]}, "auth.jwt: RS256 and ES256 need"),
        ({"enabled": True, "algorithms": ["HS256"]}, "auth.jwt.secret_env: is required"),
        ({"enabled": True, "algorithms": ["none"]}, "auth.jwt.algorithms[0]: must be one of"),
    ],
)
def test_check_config_names_the_bad_jwt_key(jwt_config: dict[str, Any], expected: str) -> None:
    from gateway_common.config import parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"auth": {"jwt": jwt_config}})
    assert expected in str(info.value)
