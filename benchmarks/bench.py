"""The gateway against a direct call and a thin proxy, in one run, on loopback.

Starts, as separate processes: the fake OpenAI upstream of the tests, the thin aiohttp proxy in
front of it (``benchmarks/thin_proxy.py``), and the gateway (``inference-gateway serve`` with a
temporary config: auth off, a model routed to the fake, another served by the built-in mock).
Then measures each target in interleaved rounds (so that a neighbour's load on the shared cores
hits every target alike) and prints absolute figures and ratios, and the issue's targets.

    .venv/bin/python -m benchmarks.bench                    # about 1.5 minutes
    .venv/bin/python -m benchmarks.bench --json out.json --soak-seconds 300

Ratios are the figures to compare across machines; absolute figures depend on the machine and on
what else runs on it (the load generator shares the cores with the servers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from benchmarks.loadgen import (
    Soak,
    Target,
    Throughput,
    latencies,
    memory_bytes,
    soak,
    throughput,
    ttfts,
)

ROOT = Path(__file__).resolve().parent.parent
MS = 1000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _log_file(path: Path) -> BinaryIO:
    return open(path, "wb")  # the caller closes it


@dataclass
class Processes:
    """The processes this run started; all are stopped at the end, by their own ids."""

    workdir: Path
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    async def spawn(
        self, name: str, *args: str, port_line: bool = False, cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start a process; with ``port_line``, wait for its ``PORT <n>`` line and return n."""
        with _log_file(self.workdir / f"{name}.log") as err:
            proc = await asyncio.create_subprocess_exec(
                *args, cwd=cwd, stdout=asyncio.subprocess.PIPE if port_line else err, stderr=err,
                env={**os.environ, **env} if env else None,
            )
        self.procs[name] = proc
        if not port_line:
            return 0
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"{name} did not start: {self.tail(name)}")
        return int(line.split()[1])

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.returncode is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def gateway_config(upstream: str, workdir: Path, transport: str = "local") -> dict[str, Any]:
    from tests.fakes.openai_upstream import REPLY

    return {
        "listen": {"core_transport": transport},
        "auth": {"enabled": False},
        "log_level": "warning",
        "storage": {"data_dir": str(workdir / "data")},
        "models": [
            {"id": "bench", "task": "chat", "provider": "openai", "upstream_url": upstream,
             "upstream_model": "llama"},
            # Non-streaming requests sent to the upstream as they are (the default streams them
            # from the upstream and assembles the answer).
            {"id": "bench-unary-wire", "task": "chat", "provider": "openai",
             "upstream_url": upstream, "upstream_model": "llama",
             "options": {"unary_via_stream": False}},
            {"id": "bench-paced", "task": "chat", "provider": "openai", "upstream_url": upstream,
             "upstream_model": "slow-stream"},
            {"id": "bench-mock", "task": "chat", "provider": "mock", "options": {"reply": REPLY}},
            {"id": "bench-text20", "task": "chat", "provider": "openai", "upstream_url": upstream,
             "upstream_model": "text-20"},
            {"id": "bench-tools20", "task": "chat", "provider": "openai", "upstream_url": upstream,
             "upstream_model": "tool-call-20"},
        ],
    }


async def wait_healthy(url: str, procs: Processes | Callable[[], None],
                       limit: float = 60.0) -> None:
    """Poll ``/health`` until it answers 200 (the gateway's core is serving); ``procs`` (or a
    check of one's own) raises when a process it started has died meanwhile."""
    check_alive = procs.check_alive if isinstance(procs, Processes) else procs
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as s:
        while True:
            check_alive()
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy after {limit:.0f} s")
            await asyncio.sleep(0.05)  # a polling interval, not a readiness guess


async def start_gateway(
    procs: Processes, upstream: str, *, split: bool = False, name: str = "gateway",
    source: Path = ROOT, env: dict[str, str] | None = None, transport: str = "local",
    wrap: Sequence[str] = (), ready_seconds: float = 60.0,
) -> tuple[str, tuple[int, ...]]:
    """Start the gateway from the source tree ``source``; (OpenAI base URL, its pids). ``wrap``
    comes before the command (a profiler: ``bench_instructions``)."""
    config = procs.workdir / f"{name}.yaml"
    data = gateway_config(upstream, procs.workdir / name, transport)
    if source != ROOT:
        del data["listen"]  # another tree may not know the key: it runs as it was
        data["models"] = [m for m in data["models"] if "options" not in m or m["provider"] == "mock"]
    config.write_text(json.dumps(data))  # JSON is YAML
    script = shutil.which("inference-gateway", path=str(Path(sys.executable).parent))
    # Without the console script (or for another tree), its module from the working directory.
    # (gateway_common.cli in trees from before the CLI had a package of its own.)
    module = "gateway_cli.cli" if (source / "gateway_cli").is_dir() else "gateway_common.cli"
    exe = [*wrap, *([script] if script and source == ROOT else [sys.executable, "-m", module])]
    http, grpc_port = free_port(), free_port()
    common = ["--config", str(config), "--host", "127.0.0.1"]
    if split:
        await procs.spawn(f"{name}-core", *exe, "core", *common, "--grpc-port", str(grpc_port),
                          cwd=source, env=env)
        await procs.spawn(f"{name}-edge", *exe, "edge", *common, "--http-port", str(http),
                          "--core", f"127.0.0.1:{grpc_port}", cwd=source, env=env)
        names: tuple[str, ...] = (f"{name}-core", f"{name}-edge")
    else:
        await procs.spawn(name, *exe, "serve", *common, "--http-port", str(http),
                          "--grpc-port", str(grpc_port), cwd=source, env=env)
        names = (name,)
    await wait_healthy(f"http://127.0.0.1:{http}/health", procs, ready_seconds)
    return f"http://127.0.0.1:{http}/v1", tuple(procs.pid(n) for n in names)


# ---- measurement ---------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Dist:
    """A latency distribution (ms), with the p50 of each round to show the noise."""

    p50: float
    p99: float
    n: int
    rounds_p50: list[float]

    @classmethod
    def of(cls, rounds: list[list[float]]) -> Dist:
        flat = [v * MS for r in rounds for v in r]
        return cls(pct(flat, 0.5), pct(flat, 0.99), len(flat),
                   [pct([v * MS for v in r], 0.5) for r in rounds])


@dataclass
class Rate:
    """Throughput (req/s), the figure of each round, and CPU per request (ms)."""

    rps: float
    rounds: list[float]
    errors: int
    cpu_ms: float | None
    client_cpu_ms: float

    @classmethod
    def of(cls, runs: list[Throughput], has_pids: bool) -> Rate:
        done = sum(r.ok for r in runs)
        return cls(
            rps=statistics.median(r.rps for r in runs),
            rounds=[r.rps for r in runs],
            errors=sum(r.errors for r in runs),
            cpu_ms=(sum((r.cpu_per_request or 0.0) * r.ok for r in runs) / done * MS
                    if has_pids else None),
            client_cpu_ms=sum(r.client_cpu_per_request * r.ok for r in runs) / done * MS,
        )


@dataclass
class Results:
    targets: list[str]
    unary: dict[str, Dist] = field(default_factory=dict)
    ttft: dict[str, Dist] = field(default_factory=dict)
    ttft_paced: dict[str, Dist] = field(default_factory=dict)
    rate_unary: dict[str, Rate] = field(default_factory=dict)
    rate_stream: dict[str, Rate] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    rss_after_load_mib: float = 0.0
    soak: dict[str, Any] | None = None
    # The bare gRPC hop (benchmarks/grpc_floor.py), measured in the same run.
    grpc_floor: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


async def measure(targets: list[Target], gateway: Target, args: argparse.Namespace) -> Results:
    res = Results([t.name for t in targets])
    lat: dict[str, list[list[float]]] = {t.name: [] for t in targets}
    first: dict[str, list[list[float]]] = {t.name: [] for t in targets}
    paced: dict[str, list[list[float]]] = {t.name: [] for t in targets}
    rates: dict[tuple[str, bool], list[Throughput]] = {}
    modes = [m for m, on in ((False, args.unary_throughput), (True, args.stream_throughput)) if on]
    for rnd in range(args.rounds):
        log(f"round {rnd + 1}/{args.rounds}: concurrency 1")
        for t in targets:
            if args.requests:
                lat[t.name].append(await latencies(t, args.requests))
            if args.stream_requests:
                first[t.name].append(await ttfts(t, args.stream_requests))
            if args.paced_requests:
                paced[t.name].append(await ttfts(t, args.paced_requests, warmup=2,
                                                 model=t.paced_model))
        for stream in modes if args.seconds else ():
            log(f"round {rnd + 1}/{args.rounds}: concurrency {args.concurrency}"
                f" {'streaming' if stream else 'non-streaming'}")
            for t in targets:
                rates.setdefault((t.name, stream), []).append(await throughput(
                    t, concurrency=args.concurrency, seconds=args.seconds,
                    warmup=args.warmup, stream=stream))
    for t in targets:
        for raw, dists in ((lat, res.unary), (first, res.ttft), (paced, res.ttft_paced)):
            if raw[t.name]:
                dists[t.name] = Dist.of(raw[t.name])
        for stream, out in ((False, res.rate_unary), (True, res.rate_stream)):
            runs = rates.get((t.name, stream))
            if runs:
                out[t.name] = Rate.of(runs, bool(t.pids))
    res.rss_after_load_mib = memory_bytes(gateway.pids) / 2**20
    if args.soak_seconds:
        log(f"soak: {args.soak_warmup:.0f} s warm-up then {args.soak_seconds:.0f} s at"
            f" concurrency {args.concurrency}, half streaming")
        s = await soak(gateway, concurrency=args.concurrency, seconds=args.soak_seconds,
                       warmup=args.soak_warmup, progress=log)
        res.soak = soak_summary(s)
    res.peak_rss_mib = memory_bytes(gateway.pids, b"VmHWM:") / 2**20
    if args.grpc_floor:
        log("the bare gRPC hop (benchmarks/grpc_floor.py)")
        res.grpc_floor = await grpc_floor()
    return res


async def grpc_floor() -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.grpc_floor", "--json", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("benchmarks.grpc_floor failed")
    figures: dict[str, float] = json.loads(out)
    return figures


def soak_summary(s: Soak) -> dict[str, Any]:
    rss = s.after_warmup()
    return {
        "seconds": round(s.seconds, 1), "warmup_seconds": s.warmup, "rps": round(s.rps, 1),
        "errors": s.errors, "rss_first_mib": rss[0] / 2**20, "rss_last_mib": rss[-1] / 2**20,
        "rss_min_mib": min(rss) / 2**20, "rss_max_mib": max(rss) / 2**20,
        "spread": s.spread, "growth": s.growth,
        "samples": [(round(t, 1), round(b / 2**20, 2)) for t, b in s.samples],
    }


# ---- report --------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(res: Results) -> str:
    names = res.targets
    short = {"direct": "gw/direct", "thin-proxy": "gw/thin"}
    short.update({n: "gw/" + n.replace("baseline", "base") for n in names
                  if n.startswith("baseline")})
    others = [n for n in short if n in names]
    width = 34
    head = (f"{'':{width}}" + "".join(f"{n:>13}" for n in names)
            + "".join(f"{short[o]:>11}" for o in others))
    lines = [head, "-" * len(head)]

    def row(label: str, values: dict[str, float | None], spec: str) -> None:
        if not any(v is not None for v in values.values()):
            return
        cells = "".join(f"{_fmt(values.get(n), spec):>13}" for n in names)
        gw = values.get("gateway")
        ratios = "".join(
            f"{(f'{gw / v:.2f}x' if gw and v else '-'):>11}"
            for v in (values.get(o) for o in others))
        lines.append(f"{label:{width}}{cells}{ratios}")

    def get(metric: dict[str, Any], attr: str) -> dict[str, float | None]:
        return {n: getattr(metric[n], attr) if n in metric else None for n in names}

    row("c=1 unary latency p50 (ms)", get(res.unary, "p50"), ".3f")
    row("c=1 unary latency p99 (ms)", get(res.unary, "p99"), ".3f")
    row("c=1 stream TTFT p50 (ms)", get(res.ttft, "p50"), ".3f")
    row("c=1 paced stream TTFT p50 (ms)", get(res.ttft_paced, "p50"), ".3f")
    row("c=64 unary (req/s)", get(res.rate_unary, "rps"), ".0f")
    row("c=64 stream (req/s)", get(res.rate_stream, "rps"), ".0f")
    row("server CPU per unary req (ms)", get(res.rate_unary, "cpu_ms"), ".3f")
    row("server CPU per stream req (ms)", get(res.rate_stream, "cpu_ms"), ".3f")
    row("client CPU per unary req (ms)", get(res.rate_unary, "client_cpu_ms"), ".3f")
    row("client CPU per stream req (ms)", get(res.rate_stream, "client_cpu_ms"), ".3f")
    if res.rate_unary or res.rate_stream:
        errors = {n: sum(r[n].errors for r in (res.rate_unary, res.rate_stream) if n in r)
                  for n in names}
        lines.append(f"{'errors under load':{width}}"
                     + "".join(f"{errors[n]:>13}" for n in names))
    lines.append(f"gateway RSS: {res.rss_after_load_mib:.1f} MiB after load,"
                 f" peak {res.peak_rss_mib:.1f} MiB")
    return "\n".join(lines)


def _range(values: list[float], spec: str) -> str:
    return f"{format(min(values), spec)}..{format(max(values), spec)}"


def targets_report(res: Results) -> tuple[str, dict[str, Any]]:
    """The issue's targets: measured value, goal, verdict, and the spread over rounds."""
    d, th, gw = "direct", "thin-proxy", "gateway"
    rows: list[tuple[str, str, str, bool | None, str]] = []
    verdicts: dict[str, Any] = {}

    def added(dists: dict[str, Dist], label: str, key: str) -> None:
        if not all(n in dists for n in (d, th, gw)):
            return
        value = dists[gw].p50 - dists[d].p50
        per_round = [g - x for g, x in zip(dists[gw].rounds_p50, dists[d].rounds_p50, strict=True)]
        thin = dists[th].p50 - dists[d].p50
        rows.append((label, f"+{value:.3f} ms", "<= 1.0 ms", value <= 1.0,
                     f"rounds {_range(per_round, '.3f')} ms; thin proxy +{thin:.3f} ms"))
        verdicts[key] = {"value_ms": value, "rounds_ms": per_round, "thin_ms": thin,
                         "pass": value <= 1.0}

    def share(rates: dict[str, Rate], label: str, key: str) -> None:
        if not all(n in rates for n in (th, gw)):
            return
        value = rates[gw].rps / rates[th].rps
        per_round = [g / t for g, t in zip(rates[gw].rounds, rates[th].rounds, strict=True)]
        # When other processes hold the cores, neither server is CPU-bound by its own work and the
        # req/s ratio flatters the slower one; the ratio of CPU per request does not.
        cpu_bound = (rates[th].cpu_ms or 0.0) / (rates[gw].cpu_ms or 1.0)
        rows.append((label, f"{value:.0%}", ">= 50%", value >= 0.5,
                     f"rounds {_range([r * 100 for r in per_round], '.0f')} %; CPU per request"
                     f" says {cpu_bound:.0%} when both are CPU-bound"))
        verdicts[key] = {"value": value, "rounds": per_round, "pass": value >= 0.5,
                         "cpu_ratio": cpu_bound}

    added(res.unary, "added latency, c=1 unary p50", "added_latency_p50")
    added(res.ttft, "added TTFT, c=1 stream p50", "added_ttft_p50")
    if res.ttft_paced:  # chunks forwarded as they arrive: close to the unpaced figure
        added(res.ttft_paced, "added TTFT, paced stream p50", "added_ttft_paced_p50")
    share(res.rate_unary, "c=64 unary vs thin proxy", "throughput_unary_vs_thin")
    share(res.rate_stream, "c=64 stream vs thin proxy", "throughput_stream_vs_thin")
    if res.soak:
        spread = res.soak["spread"]
        rows.append(("RSS spread over the soak", f"{spread:.1%}", "<= 10%", spread <= 0.10,
                     f"{res.soak['rss_min_mib']:.1f}..{res.soak['rss_max_mib']:.1f} MiB over "
                     f"{res.soak['seconds'] - res.soak['warmup_seconds']:.0f} s after"
                     f" {res.soak['warmup_seconds']:.0f} s warm-up, growth"
                     f" {res.soak['growth']:+.1%}, {res.soak['rps']:.0f} req/s"))
        verdicts["rss_flat"] = {"spread": spread, "pass": spread <= 0.10}
    else:
        rows.append(("RSS spread over the soak", "not run", "<= 10%", None,
                     "use --soak-seconds 300"))
    lines = [f"{'target (issue 2)':32}{'measured':>12}{'goal':>12}{'':>7}  noise / context"]
    for label, value, goal, ok, note in rows:
        verdict = "-" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"{label:32}{value:>12}{goal:>12}{verdict:>7}  {note}")
    lines += at_reference(verdicts)
    return "\n".join(lines), verdicts


# What the thin proxy adds at c=1 on its reference machine (its ms goals are set there).
REFERENCE_THIN_MS = 0.25


def at_reference(verdicts: dict[str, Any]) -> list[str]:
    """The c=1 figures scaled to the issue's reference machine by the thin proxy's unary figure
    of this run (how much slower this host is), added to ``verdicts``; the lines to print."""
    unary = verdicts.get("added_latency_p50")
    if not unary or unary["thin_ms"] <= 0:
        return []
    factor = unary["thin_ms"] / REFERENCE_THIN_MS
    scaled = {key: verdicts[key]["value_ms"] / factor
              for key in ("added_latency_p50", "added_ttft_p50", "added_ttft_paced_p50")
              if key in verdicts}
    verdicts["at_reference"] = {"host_factor": factor, "scaled_ms": scaled,
                                "pass": all(v <= 1.0 for v in scaled.values())}
    names = {"added_latency_p50": "unary", "added_ttft_p50": "TTFT",
             "added_ttft_paced_p50": "paced TTFT"}
    figures = ", ".join(f"{names[k]} +{v:.2f} ms" for k, v in scaled.items())
    return [
        f"This host is {factor:.1f}x the issue's reference machine by the thin proxy's c=1 unary"
        f" figure (+{unary['thin_ms']:.3f} ms here, ~{REFERENCE_THIN_MS} ms there).",
        f"The c=1 figures scaled by that: {figures} (goal <= 1.0 ms):"
        f" {'PASS' if verdicts['at_reference']['pass'] else 'FAIL'}",
    ]


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--requests", type=int, default=600,
                   help="c=1 non-streaming requests per target per round (default 600)")
    p.add_argument("--stream-requests", type=int, default=300,
                   help="c=1 streaming requests per target per round (default 300)")
    p.add_argument("--paced-requests", type=int, default=50,
                   help="c=1 streams with 5 ms between tokens per target per round (default 50; 0: skip)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0,
                   help="measured window of each throughput run (default 3)")
    p.add_argument("--warmup", type=float, default=0.5,
                   help="warm-up before each throughput window (default 0.5)")
    p.add_argument("--soak-warmup", type=float, default=60.0,
                   help="load before the soak's RSS figures count (default 60)")
    p.add_argument("--soak-seconds", type=float, default=0.0,
                   help="then load the gateway this long and check its RSS stays flat")
    p.add_argument("--mock", action="store_true",
                   help="also measure the gateway serving the built-in mock provider")
    p.add_argument("--no-unary-throughput", dest="unary_throughput", action="store_false",
                   help="skip the non-streaming throughput runs")
    p.add_argument("--no-stream-throughput", dest="stream_throughput", action="store_false",
                   help="skip the streaming throughput runs")
    p.add_argument("--baseline", metavar="DIR", type=Path, action="append", default=[],
                   help="also run the gateway from this source tree (e.g. a `git archive` of an"
                        " older commit) as target 'baseline', for before/after in one run;"
                        " repeat for 'baseline2', ...")
    p.add_argument("--targets", metavar="NAMES",
                   help="comma-separated subset of: direct, thin-proxy, gateway, gateway-mock,"
                        " baseline, baseline2, ... (default: all that are started)")
    p.add_argument("--gateway-env", metavar="KEY=VALUE", action="append", default=[],
                   help="environment of the 'gateway' process (not the baseline's); repeatable")
    p.add_argument("--split", action="store_true",
                   help="run the core and the edge as two processes instead of `serve`")
    p.add_argument("--grpc-hop", action="store_true",
                   help="add gateway-grpc: serve with the edge calling the core over its gRPC"
                        " port (listen.core_transport: grpc), as in production's two processes")
    p.add_argument("--no-grpc-floor", dest="grpc_floor", action="store_false",
                   help="skip measuring the bare gRPC hop (benchmarks/grpc_floor.py)")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> Results:
    with tempfile.TemporaryDirectory(prefix="igw-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            py = sys.executable
            fake = await procs.spawn("upstream", py, "-m", "benchmarks.upstream", port_line=True)
            upstream = f"http://127.0.0.1:{fake}"
            thin = await procs.spawn("thin-proxy", py, "-m", "benchmarks.thin_proxy",
                                     "--upstream", upstream, port_line=True)
            gw_env = dict(kv.split("=", 1) for kv in args.gateway_env)
            gw_url, gw_pids = await start_gateway(procs, f"{upstream}/v1", split=args.split,
                                                  env=gw_env)
            log(f"upstream :{fake}, thin proxy :{thin}, gateway {gw_url} (pids {gw_pids})")
            gateway = Target("gateway", gw_url, "bench", "bench-paced", gw_pids)
            targets = [
                Target("direct", f"{upstream}/v1", "llama", "slow-stream"),
                Target("thin-proxy", f"http://127.0.0.1:{thin}/v1", "llama", "slow-stream",
                       (procs.pid("thin-proxy"),)),
                gateway,
            ]
            if args.mock:
                targets.append(Target("gateway-mock", gw_url, "bench-mock", "bench-mock",
                                      gw_pids))
            if args.grpc_hop:
                hop_url, hop_pids = await start_gateway(
                    procs, f"{upstream}/v1", name="gateway-grpc", env=gw_env, transport="grpc")
                log(f"gateway-grpc: serve with listen.core_transport grpc at {hop_url}")
                targets.append(Target("gateway-grpc", hop_url, "bench", "bench-paced", hop_pids))
            for i, tree in enumerate(args.baseline, 1):
                name = "baseline" if i == 1 else f"baseline{i}"
                base_url, base_pids = await start_gateway(
                    procs, f"{upstream}/v1", split=args.split, name=name, source=tree.resolve())
                log(f"{name}: the gateway from {tree} at {base_url} (pids {base_pids})")
                targets.append(Target(name, base_url, "bench", "bench-paced", base_pids))
            if args.targets:
                chosen = {n.strip() for n in args.targets.split(",")}
                targets = [t for t in targets if t.name in chosen or t is gateway]
            load_before = os.getloadavg()
            res = await measure(targets, gateway, args)
            procs.check_alive()
            res.meta = {
                "command": " ".join(["python -m benchmarks.bench", *sys.argv[1:]]),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
                "python": platform.python_version(), "platform": platform.platform(),
                "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                "gateway": "core + edge as two processes" if args.split else "serve (one process)",
                "args": vars(args),
            }
            return res
        finally:
            await procs.stop_all()


def report(res: Results, out: Callable[[str], None] = print) -> dict[str, Any]:
    text, verdicts = targets_report(res)
    out(table(res))
    out("")
    out(text)
    floor = res.grpc_floor
    if floor:
        out(f"\nThe bare gRPC hop (grpc.aio client and server in one process, nothing behind it):"
            f" c=1 p50 {floor['unary_c1_p50_ms']:.3f} ms; CPU {floor['unary_c64_cpu_ms']:.3f} ms"
            f" per unary call and {floor['stream_c64_cpu_ms']:.3f} ms per"
            f" {floor['stream_messages']:.0f}-message stream at c=64.")
        for kind, rates, key in (("unary", res.rate_unary, "unary_c64_cpu_ms"),
                                 ("stream", res.rate_stream, "stream_c64_cpu_ms")):
            thin = rates.get("thin-proxy")
            if thin is not None and thin.cpu_ms:
                best = thin.cpu_ms / (thin.cpu_ms + floor[key])
                out(f"  {kind}: thin proxy {thin.cpu_ms:.3f} ms CPU/request + that hop"
                    f" {floor[key]:.3f} ms: a two-hop gateway doing nothing else would reach"
                    f" about {best:.0%} of the thin proxy's throughput when CPU-bound")
    meta = res.meta
    out(f"\n{meta['cpus']} CPUs, load average {meta['loadavg_before'][0]:.2f} before,"
        f" {meta['loadavg_after'][0]:.2f} after; gateway: {meta['gateway']}")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import uvloop

    res = uvloop.run(run(args))
    verdicts = report(res)
    if args.json:
        data = asdict(res)
        data["verdicts"] = verdicts
        Path(args.json).write_text(json.dumps(data, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
