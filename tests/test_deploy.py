"""The deployment files describe the real thing: docker-compose.yml, deploy/kubernetes/, the
Prometheus alert rules and the Grafana dashboard parse, and agree with the CLI, the config and
the gateway (ports, probe paths, environment variable names, metric names)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway_cli.cli import build_parser
from gateway_common.config import GatewayConfig, load_config
from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _env_names(config: GatewayConfig) -> set[str]:
    return {config.auth.admin_token_env, config.storage.dsn_env, config.limits.redis_url_env}


@pytest.mark.parametrize("path", ["deploy/gateway.yaml", "deploy/kubernetes/gateway.yaml"])
def test_the_production_configs_load(path: str) -> None:
    config = load_config(str(ROOT / path))
    assert config.storage.backend == "postgres" and config.limits.backend == "redis"
    assert config.timeouts.drain_seconds > 0
    assert config.listen.http_port == 8080 and config.listen.grpc_port == 50051


def test_compose_runs_two_serve_replicas_behind_a_balancer() -> None:
    compose = _yaml(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert {"gateway-1", "gateway-2", "lb", "postgres", "redis", "upstream", "prometheus",
            "grafana"} <= set(services)
    config = load_config(str(DEPLOY / "gateway.yaml"))
    parser = build_parser()
    for name in ("gateway-1", "gateway-2"):
        gw = services[name]
        args = parser.parse_args(gw["command"])  # the CLI takes exactly these arguments
        assert args.command == "serve"
        mounted = {v.split(":")[1]: v.split(":")[0] for v in gw["volumes"]}
        assert mounted[args.config] == "./deploy/gateway.yaml"
        assert set(gw["environment"]) == _env_names(config)
        assert "/health/ready" in " ".join(gw["healthcheck"]["test"])
        grace = int(gw["stop_grace_period"].rstrip("s"))
        assert grace > config.timeouts.drain_seconds + config.timeouts.shutdown_grace_seconds
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "server gateway-1:8080" in nginx and "server gateway-2:8080" in nginx
    assert "proxy_buffering off" in nginx  # streams pass as they come
    prometheus = _yaml(DEPLOY / "prometheus.yml")
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["gateway-1:8080", "gateway-2:8080"]
    volumes = " ".join(services["prometheus"]["volumes"])
    assert "alerts.yml" in volumes and "dashboard.json" in " ".join(services["grafana"]["volumes"])


def test_kubernetes_manifests_agree_with_the_gateway() -> None:
    k = DEPLOY / "kubernetes"
    kustomization = _yaml(k / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (k / resource).exists(), resource
    assert kustomization["configMapGenerator"][0]["files"] == ["gateway.yaml"]
    config = load_config(str(k / "gateway.yaml"))
    (deployment,) = _docs(k / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve" and args.config == "/etc/gateway/gateway.yaml"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.listen.http_port, "grpc": config.listen.grpc_port}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {e["name"] for e in container["env"]} == _env_names(config)
    secret_keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    (example,) = _docs(k / "secret.example.yaml")
    assert set(example["stringData"]) == secret_keys
    assert pod["terminationGracePeriodSeconds"] > (config.timeouts.drain_seconds
                                                   + config.timeouts.shutdown_grace_seconds)
    assert container["resources"]["requests"]["cpu"]
    (service,) = _docs(k / "service.yaml")
    assert {p["port"] for p in service["spec"]["ports"]} == set(ports.values())
    (hpa,) = _docs(k / "hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (pdb,) = _docs(k / "pdb.yaml")
    assert pdb["spec"]["minAvailable"] >= 1


def _metric_names(exprs: list[str]) -> set[str]:
    names = set()
    for expr in exprs:
        names |= set(re.findall(r"\bgateway_[a-z_]+", expr))
    return names


async def test_every_metric_of_the_dashboard_and_the_alerts_is_exported(
        gateway_factory: GatewayFactory) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    alerts = _yaml(DEPLOY / "alerts.yml")
    exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    used = _metric_names(exprs)
    assert len(used) >= 10
    fake = await FaultyUpstream("a", "ok").start()
    try:
        gw = await gateway_factory({"auth": {"enabled": False}, "models": [
            {"id": "m", "task": "chat", "provider": "openai", "upstream_url": fake.base_url,
             "limits": {"rpm": 1}}]})
        async with aiohttp.ClientSession() as s:
            for _ in range(2):  # one served, one refused by the limit
                async with s.post(gw.http + "/v1/chat/completions", json={
                        "model": "m", "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}) as r:
                    await r.read()
            async with s.get(gw.http + "/metrics") as r:
                text = await r.text()
    finally:
        await fake.stop()
    exported = set(re.findall(r"^# TYPE (gateway_[a-z_]+) ", text, re.M))
    # A histogram's series are its name plus _bucket, _sum and _count.
    series = exported | {f"{n}{suffix}" for n in exported for suffix in ("_bucket", "_sum",
                                                                          "_count")}
    missing = sorted(n for n in used if n not in series and f"{n}_total" not in series)
    assert not missing, missing
