"""Access tokens through the core's stubs: every rejection, model scope, revocation (also seen by a
second core on the same store, in-process and as a separate process), expiry, the admin guard."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway_core.auth.service import make_token
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import (
    AuthGateway,
    auth_config,
    bearer,
    chat,
    failures,
    random_secret,
    reason_of,
)
from tests.conftest import GatewayFactory, closed_port

Md = tuple[tuple[str, str], ...]


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("none", "missing"),
        ("basic", "malformed"),
        ("bearer-empty", "malformed"),
        ("short-igw", "malformed"),
        ("admin-credential", "malformed"),
        ("unknown", "unknown"),
        ("not-a-token", "unknown"),
        ("expired", "expired"),
        ("revoked", "revoked"),
    ],
)
async def test_every_rejection_is_unauthenticated(auth_gw: AuthGateway, case: str,
                                                  reason: str) -> None:
    md: Md
    secret = ""
    if case == "none":
        md = ()
    elif case == "basic":
        md = (("authorization", "Basic dXNlcjpwYXNz"),)
    elif case == "bearer-empty":
        md = (("authorization", "Bearer "),)
    elif case == "short-igw":
        md = bearer("igw_abc")
    elif case == "admin-credential":
        md = bearer(auth_gw.admin)
    elif case == "unknown":
        md = bearer(random_secret())
    elif case == "not-a-token":
        md = bearer("sk-proj-0123456789")
    elif case == "expired":
        assert auth_gw.gw.core.auth is not None
        record, secret = make_token("old", ("mock-chat",), time.time() - 1)
        await auth_gw.gw.core.auth.store.create_token(record)
        md = bearer(secret)
    else:
        token_id, secret = await auth_gw.create("mock-chat")
        await auth_gw.inference.Chat(chat(), metadata=bearer(secret), timeout=5)
        await auth_gw.revoke(token_id)
        md = bearer(secret)
    before = failures(reason)
    err = await _refused(auth_gw.inference.Chat(chat(), metadata=md, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(err) == f"auth_{reason}"
    assert failures(reason) == before + 1
    for value in (auth_gw.admin, auth_gw.token, secret):
        if value:
            assert value not in (err.details() or "")
    # Streaming and model listing are refused the same way.
    stream_err = await _refused(auth_gw.inference.ChatStream(chat(), metadata=md, timeout=5)
                                .read())
    assert stream_err.code() == grpc.StatusCode.UNAUTHENTICATED
    list_err = await _refused(auth_gw.models.ListModels(pb.ListModelsRequest(), metadata=md))
    assert list_err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_x_api_key_is_accepted(auth_gw: AuthGateway) -> None:
    resp = await auth_gw.inference.Chat(chat(), metadata=(("x-api-key", auth_gw.token),),
                                        timeout=5)
    assert resp.choices[0].message.content == "This is a mock reply to: hi"


async def test_a_token_for_one_model_is_refused_on_another(auth_gw: AuthGateway) -> None:
    _, secret = await auth_gw.create("mock-chat", name="chat only")
    md = bearer(secret)
    inf = auth_gw.inference
    assert (await inf.Chat(chat("mock-chat"), metadata=md, timeout=5)).choices
    assert (await inf.Chat(chat("chat"), metadata=md, timeout=5)).choices  # the alias
    chunks = [c async for c in inf.ChatStream(chat("mock-chat"), metadata=md, timeout=5)]
    assert chunks[-1].HasField("usage")
    before = failures("forbidden_model")
    denied = [
        inf.Embed(pb.EmbedRequest(model="mock-embedding", inputs=["x"]), metadata=md, timeout=5),
        inf.Chat(chat("mock-completion"), metadata=md, timeout=5),
        inf.ChatStream(chat("mock-completion"), metadata=md, timeout=5).read(),
        inf.Chat(chat("no-such-model"), metadata=md, timeout=5),
        auth_gw.models.GetModel(pb.GetModelRequest(id="mock-embedding"), metadata=md),
    ]
    for call in denied:
        err = await _refused(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
        assert reason_of(err) == "auth_forbidden_model"
    assert failures("forbidden_model") == before + len(denied)
    assert (await auth_gw.models.GetModel(pb.GetModelRequest(id="chat"), metadata=md)).id == \
        "mock-chat"
    listed = await auth_gw.models.ListModels(pb.ListModelsRequest(), metadata=md)
    assert [m.id for m in listed.models] == ["mock-chat"]
    everything = await auth_gw.models.ListModels(pb.ListModelsRequest(),
                                                 metadata=bearer(auth_gw.token))
    assert len(everything.models) == 10


async def _transcribe(stub: pb_grpc.InferenceAsyncStub, md: Md) -> pb.TranscribeResponse:
    async def chunks() -> object:
        yield pb.TranscribeChunk(header=pb.TranscribeRequest(
            model="mock-transcription", mime_type="audio/wav"))
        yield pb.TranscribeChunk(audio=b"RIFF" + b"\0" * 64)

    return await stub.TranscribeStream(chunks(), metadata=md, timeout=5)  # type: ignore[arg-type]


async def test_client_stream_is_checked_on_its_first_message(auth_gw: AuthGateway) -> None:
    _, chat_only = await auth_gw.create("mock-chat")
    err = await _refused(_transcribe(auth_gw.inference, bearer(chat_only)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await _refused(_transcribe(auth_gw.inference, ()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    _, audio = await auth_gw.create("mock-transcription")
    resp = await _transcribe(auth_gw.inference, bearer(audio))
    assert isinstance(resp.text, str)


async def test_health_and_reflection_need_no_token(auth_gw: AuthGateway) -> None:
    health = health_pb2_grpc.HealthStub(auth_gw.channel)
    resp = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    admin = await health.Check(health_pb2.HealthCheckRequest(
        service="inference_gateway.v1.Admin"), timeout=5)
    assert admin.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(auth_gw.channel)

    async def one() -> object:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for answer in refl.ServerReflectionInfo(one(), timeout=5):
        names = {s.name for s in answer.list_services_response.service}
        assert "inference_gateway.v1.Admin" in names


async def test_admin_needs_the_admin_credential(auth_gw: AuthGateway) -> None:
    admin = auth_gw.admin_stub
    before = failures("admin_required")
    for md, reason in [((), "auth_missing"), (bearer(auth_gw.token), "auth_admin_required"),
                       (bearer(random_secret()), "auth_admin_required"),
                       ((("authorization", "Token x"),), "auth_malformed")]:
        err = await _refused(admin.ListTokens(apb.ListTokensRequest(), metadata=md))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(err) == reason
    assert failures("admin_required") == before + 2
    listed = await admin.ListTokens(apb.ListTokensRequest(), metadata=auth_gw.admin_md)
    assert [t.name for t in listed.tokens] == ["default"]


async def test_admin_token_lifecycle_and_validation(auth_gw: AuthGateway) -> None:
    admin, md = auth_gw.admin_stub, auth_gw.admin_md
    resp = await admin.CreateToken(apb.CreateTokenRequest(
        name="ci", models=["chat", "mock-embedding", "chat"], expires_in_seconds=3600),
        metadata=md)
    token = resp.token
    assert resp.secret.startswith("igw_") and len(resp.secret) == 47
    assert token.prefix == resp.secret[:8] and token.status == "active"
    assert list(token.models) == ["mock-chat", "mock-embedding"]
    assert abs(token.expires_at - (time.time() + 3600)) < 5
    got = await admin.GetToken(apb.GetTokenRequest(id=token.id), metadata=md)
    assert got.name == "ci" and got.prefix == token.prefix
    assert resp.secret not in str(got)
    by_model = await admin.ListTokens(apb.ListTokensRequest(model="mock-embedding"), metadata=md)
    assert {t.id for t in by_model.tokens} == {token.id, (await _default_id(auth_gw))}
    revoked = await admin.RevokeToken(apb.RevokeTokenRequest(id=token.id), metadata=md)
    assert revoked.status == "revoked" and revoked.revoked_at > 0
    again = await admin.RevokeToken(apb.RevokeTokenRequest(id=token.id), metadata=md)
    assert again.revoked_at == revoked.revoked_at
    active = await admin.ListTokens(apb.ListTokensRequest(), metadata=md)
    assert token.id not in {t.id for t in active.tokens}
    everything = await admin.ListTokens(apb.ListTokensRequest(include_revoked=True), metadata=md)
    assert token.id in {t.id for t in everything.tokens}
    star = await admin.CreateToken(apb.CreateTokenRequest(name="all", models=["*", "chat"]),
                                   metadata=md)
    assert list(star.token.models) == ["*"]

    bad = [
        apb.CreateTokenRequest(name="", models=["mock-chat"]),
        apb.CreateTokenRequest(name="x", models=[]),
        apb.CreateTokenRequest(name="x", models=["ghost"]),
        apb.CreateTokenRequest(name="x", models=["mock-chat"], expires_at=int(time.time()) - 5),
        apb.CreateTokenRequest(name="x\n", models=["mock-chat"], expires_in_seconds=-1),
    ]
    for req in bad:
        err = await _refused(admin.CreateToken(req, metadata=md))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, req
    for call in (admin.GetToken(apb.GetTokenRequest(id="tok_nope"), metadata=md),
                 admin.RevokeToken(apb.RevokeTokenRequest(id="tok_nope"), metadata=md)):
        assert (await _refused(call)).code() == grpc.StatusCode.NOT_FOUND
    models = await admin.ListModels(pb.ListModelsRequest(), metadata=md)
    assert len(models.models) == 10


async def _default_id(gw: AuthGateway) -> str:
    listed = await gw.admin_stub.ListTokens(apb.ListTokensRequest(), metadata=gw.admin_md)
    return next(t.id for t in listed.tokens if t.name == "default")


async def test_expiry_is_checked_on_every_request(auth_gw: AuthGateway) -> None:
    assert auth_gw.gw.core.auth is not None
    record, secret = make_token("short", ("mock-chat",), time.time() + 0.3)
    await auth_gw.gw.core.auth.store.create_token(record)
    md = bearer(secret)
    assert (await auth_gw.inference.Chat(chat(), metadata=md, timeout=5)).choices  # now cached
    await asyncio.sleep(max(0.0, record.expires_at - time.time()) + 0.01)  # type: ignore[operator]
    err = await _refused(auth_gw.inference.Chat(chat(), metadata=md, timeout=5))
    assert reason_of(err) == "auth_expired"


async def test_revocation_is_seen_by_the_next_request_on_a_second_core(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    data = auth_config(tmp_path / "data")
    first = await open_auth_gateway(gateway_factory, data)
    second = await gateway_factory(data)  # same store, not fresh: no new credentials
    assert second.core.auth is not None and second.core.auth.bootstrap.admin_secret is None
    token_id, secret = await first.create("mock-chat")
    md = bearer(secret)
    async with grpc.aio.insecure_channel(second.grpc_target) as ch:
        other = pb_grpc.InferenceStub(ch)
        for stub in (first.inference, other):  # both caches hold the token now
            for _ in range(3):
                assert (await stub.Chat(chat(), metadata=md, timeout=5)).choices
        await first.revoke(token_id)
        for stub in (other, first.inference):
            err = await _refused(stub.Chat(chat(), metadata=md, timeout=5))
            assert reason_of(err) == "auth_revoked"
        # The other core's own default token is untouched.
        assert (await other.Chat(chat(), metadata=bearer(first.token), timeout=5)).choices
    await first.channel.close()


async def _wait_serving(target: str, proc: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for _ in range(300):
            if proc.returncode is not None:
                raise AssertionError(f"the core exited with {proc.returncode}")
            try:
                resp = await health.Check(health_pb2.HealthCheckRequest(), timeout=1,
                                          wait_for_ready=True)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)  # polling health, not guessing readiness
    raise AssertionError("the core did not start")


async def test_revocation_is_seen_by_a_core_in_another_process(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    data = auth_config(tmp_path / "data")
    first = await open_auth_gateway(gateway_factory, data)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    port = closed_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway_cli.cli", "core", "--config", str(path),
        "--grpc-port", str(port), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        await _wait_serving(f"127.0.0.1:{port}", proc)
        token_id, secret = await first.create("mock-chat")
        md = bearer(secret)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            other = pb_grpc.InferenceStub(ch)
            assert (await other.Chat(chat(), metadata=md, timeout=5)).choices
            await first.revoke(token_id)
            err = await _refused(other.Chat(chat(), metadata=md, timeout=5))
            assert reason_of(err) == "auth_revoked"
    finally:
        proc.terminate()
        await proc.wait()
        await first.channel.close()
    out = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
    assert "shown this once" not in out and first.admin not in out  # not a fresh store


async def test_usage_is_recorded_per_token_and_model(auth_gw: AuthGateway) -> None:
    a_id, a = await auth_gw.create("mock-chat", name="alpha")
    b_id, b = await auth_gw.create("*", name="beta")
    started = time.time()
    inf = auth_gw.inference
    r1 = await inf.Chat(chat(text="one two three", end_user="alice"), metadata=bearer(a),
                        timeout=5)
    r2 = await inf.Chat(chat(text="four", end_user="bob"), metadata=bearer(a), timeout=5)
    chunks = [c async for c in inf.ChatStream(chat(), metadata=bearer(b), timeout=5)]
    await inf.Embed(pb.EmbedRequest(model="mock-embedding", inputs=["x", "y"]),
                    metadata=bearer(b), timeout=5)
    await _refused(inf.Embed(pb.EmbedRequest(model="mock-embedding", inputs=["x"]),
                             metadata=bearer(a), timeout=5))
    await _refused(inf.Chat(chat(), metadata=bearer(random_secret()), timeout=5))

    admin, md = auth_gw.admin_stub, auth_gw.admin_md
    rows = (await admin.QueryUsage(apb.QueryUsageRequest(start_time=started - 1), metadata=md)
            ).rows
    got = {(r.token_id, r.model): r for r in rows}
    assert set(got) == {(a_id, "mock-chat"), (a_id, "mock-embedding"), (b_id, "mock-chat"),
                        (b_id, "mock-embedding")}
    alpha = got[(a_id, "mock-chat")]
    assert (alpha.token_name, alpha.requests, alpha.errors, alpha.end_users) == ("alpha", 2, 0, 2)
    assert alpha.prompt_tokens == r1.usage.prompt_tokens + r2.usage.prompt_tokens
    assert alpha.completion_tokens == r1.usage.completion_tokens + r2.usage.completion_tokens
    assert alpha.mean_latency_ms > 0
    assert got[(b_id, "mock-chat")].completion_tokens == chunks[-1].usage.completion_tokens
    assert got[(a_id, "mock-embedding")].errors == 1

    per_token = (await admin.QueryUsage(apb.QueryUsageRequest(
        token_id=b_id, group_by=apb.QueryUsageRequest.GROUP_BY_TOKEN), metadata=md)).rows
    assert [(r.token_id, r.model, r.requests) for r in per_token] == [(b_id, "", 2)]
    per_model = (await admin.QueryUsage(apb.QueryUsageRequest(
        model="chat", group_by=apb.QueryUsageRequest.GROUP_BY_MODEL), metadata=md)).rows
    assert [(r.model, r.requests) for r in per_model] == [("mock-chat", 3)]
    later = (await admin.QueryUsage(apb.QueryUsageRequest(start_time=time.time() + 60),
                                    metadata=md)).rows
    assert not later
    err = await _refused(admin.QueryUsage(apb.QueryUsageRequest(start_time=10, end_time=5),
                                          metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_last_used_is_written_in_batches(auth_gw: AuthGateway) -> None:
    token_id, secret = await auth_gw.create("mock-chat")
    get = apb.GetTokenRequest(id=token_id)
    assert (await auth_gw.admin_stub.GetToken(get, metadata=auth_gw.admin_md)).last_used_at == 0
    await auth_gw.inference.Chat(chat(), metadata=bearer(secret), timeout=5)
    assert auth_gw.gw.core.auth is not None
    await auth_gw.gw.core.auth.authenticator.flush_last_used()
    used = (await auth_gw.admin_stub.GetToken(get, metadata=auth_gw.admin_md)).last_used_at
    assert abs(used - time.time()) < 5


async def test_admin_credential_from_the_environment(
    gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGW_TEST_ADMIN", "operator-chosen-admin-secret")
    gw = await gateway_factory(auth_config(tmp_path / "data", admin_token_env="IGW_TEST_ADMIN"))
    assert gw.core.auth is not None
    assert gw.core.auth.bootstrap.admin_secret is None  # none generated
    assert gw.core.auth.bootstrap.token_secret is not None
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        stub = apb_grpc.AdminStub(ch)
        listed = await stub.ListTokens(apb.ListTokensRequest(),
                                       metadata=bearer("operator-chosen-admin-secret"))
        assert len(listed.tokens) == 1
        err = await _refused(stub.ListTokens(apb.ListTokensRequest(),
                                             metadata=bearer("operator-chosen-admin-secreT")))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_short_admin_credential_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway_common.config import ConfigError, parse_config
    from gateway_core.server import start_core

    monkeypatch.setenv("IGW_TEST_ADMIN", "short")
    config = parse_config(auth_config(tmp_path / "data", admin_token_env="IGW_TEST_ADMIN"))
    with pytest.raises(ConfigError, match="IGW_TEST_ADMIN must hold at least 16"):
        await start_core(config, host="127.0.0.1", port=0)
