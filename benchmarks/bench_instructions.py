"""Instructions per request: the gateway against the thin proxy, counted by callgrind.

Latency and req/s on a shared 2-vCPU machine move by 20-50% between runs (steal time, a
neighbour's load); an instruction count hardly does: callgrind counts the same total for the same
code and inputs whatever else the machine does. What still varies is the input: how the fake
upstream's events fall into network reads, so how many messages a stream makes. Runs of one tree
agree within ~0.6% (non-streaming) and ~1.5% (streaming). So this is the figure to compare two
trees by, or the gateway with the best plain Python, when a change is a few percent.

One run starts the fake upstream (not counted), then the thin proxy and the gateway (``serve``,
one process), and ``--baseline`` trees, each under ``valgrind --tool=callgrind`` with counting
off. For each, and for non-streaming then streaming chat requests (and streams of 20 events: a
20-token text answer, and one tool call in 20 argument fragments): warm-up requests, then
counting on for ``--requests`` sequential requests, a dump, counting off. Instructions per request
are the dump's total over the requests (the server's whole process: aiohttp, our code, the
interpreter; the client and the upstream are other processes).

    .venv/bin/python -m benchmarks.bench_instructions                      # about 3 minutes
    .venv/bin/python -m benchmarks.bench_instructions --baseline /tmp/old  # + an older tree

What it does not show: time spent waiting (wake-ups, cache misses after an idle pause, the
scheduler), which is what the paced first-token figure of ``bench.py`` sees.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from benchmarks.bench import Processes, log, start_gateway, wait_healthy
from benchmarks.loadgen import Target, first_token, session, stream_once, unary_once

KINDS = ("unary", "unary_wire", "stream", "text20", "tools20")
# The streams of 20 events: (the gateway's model, the upstream's) for a 20-token text answer and
# for one tool call in 20 argument fragments.
STREAMS_20 = {"text20": ("bench-text20", "text-20"), "tools20": ("bench-tools20", "tool-call-20")}


def callgrind(workdir: Path, name: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={workdir}/{name}.callgrind.%p"]


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def counting_on(workdir: Path, name: str, pid: int) -> set[Path]:
    """Zero the counts and switch counting on; the dumps written so far."""
    before = set(workdir.glob(f"{name}.callgrind.*"))
    control("--zero", str(pid))
    control("--instr=on", str(pid))
    return before


def counting_off(workdir: Path, name: str, pid: int, before: set[Path]) -> int:
    """Dump, switch counting off; the instructions counted since ``counting_on``."""
    control("--dump", str(pid))
    control("--instr=off", str(pid))
    total = 0
    for path in set(workdir.glob(f"{name}.callgrind.*")) - before:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                total += int(line.split()[1])
                break
    return total


async def count(target: Target, pid: int, workdir: Path, requests: int, warmup: int,
                kinds: tuple[str, ...] = KINDS) -> dict[str, float]:
    """Instructions per request of ``target``'s process, for each kind of request."""
    out: dict[str, float] = {}
    async with session(1) as s:
        for kind in kinds:
            model = None
            if kind in STREAMS_20:
                model = STREAMS_20[kind][target.name == "thin-proxy"]
            elif kind == "unary_wire" and target.name == "gateway":
                model = "bench-unary-wire"  # (older trees send every request as it is)
            unary = kind.startswith("unary")
            body = target.body(stream=not unary, model=model)
            one = unary_once if unary else first_token if kind == "stream" else stream_once
            for _ in range(warmup):
                await one(s, target.chat_url, body)
            before = counting_on(workdir, target.name, pid)
            for _ in range(requests):
                await one(s, target.chat_url, body)
            out[kind] = counting_off(workdir, target.name, pid, before) / requests
            log(f"{target.name} {kind}: {out[kind]:,.0f} instructions per request")
    return out


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is needed: apt-get install valgrind")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="igw-instr-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        try:
            py = sys.executable
            fake = await procs.spawn("upstream", py, "-m", "benchmarks.upstream", port_line=True)
            upstream = f"http://127.0.0.1:{fake}"
            thin = await procs.spawn("thin-proxy", *callgrind(workdir, "thin-proxy"), py, "-m",
                                     "benchmarks.thin_proxy", "--upstream", upstream,
                                     port_line=True)
            # It forwards everything: ready once the upstream's model list comes back through it.
            await wait_healthy(f"http://127.0.0.1:{thin}/v1/models", procs, limit=300)
            targets = [(Target("thin-proxy", f"http://127.0.0.1:{thin}/v1", "llama",
                               "slow-stream"), procs.pid("thin-proxy"))]
            trees = [("gateway", None), *((f"baseline{i if i > 1 else ''}", tree)
                                          for i, tree in enumerate(args.baseline, 1))]
            for name, tree in trees:
                extra = {} if tree is None else {"source": tree.resolve()}
                url, pids = await start_gateway(procs, f"{upstream}/v1", name=name,
                                                wrap=callgrind(workdir, name),
                                                ready_seconds=600, **extra)
                targets.append((Target(name, url, "bench", "bench-paced"), pids[0]))
            for target, pid in targets:
                results[target.name] = await count(target, pid, workdir, args.requests,
                                                   args.warmup, tuple(args.kinds or KINDS))
                procs.check_alive()
        except aiohttp.ClientError as exc:
            raise SystemExit(f"a request failed: {exc}") from exc
        finally:
            await procs.stop_all()
    return results


def report(results: dict[str, dict[str, float]]) -> None:
    names = list(results)
    head = f"{'instructions per request':<28}" + "".join(f"{n:>14}" for n in names)
    ratios = [n for n in names if n != "thin-proxy"]
    head += "".join(f"{n[:4] + '/thin':>12}" for n in ratios)
    if "baseline" in results:
        head += f"{'gw/base':>10}"
    print(head)
    print("-" * len(head))
    for kind in results[names[0]]:
        row = f"{kind:<28}" + "".join(f"{results[n][kind]:>14,.0f}" for n in names)
        row += "".join(f"{results[n][kind] / results['thin-proxy'][kind]:>11.2f}x"
                       for n in ratios)
        if "baseline" in results:
            row += f"{results['gateway'][kind] / results['baseline'][kind]:>9.3f}x"
        print(row)
    if "tools20" not in results[names[0]] or "text20" not in results[names[0]]:
        return
    print(f"{'tools20 / text20':<28}" + "".join(
        f"{results[n]['tools20'] / results[n]['text20']:>13.3f}x" for n in names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100, help="counted requests of each kind")
    p.add_argument("--warmup", type=int, default=20, help="uncounted requests before them")
    p.add_argument("--baseline", metavar="DIR", type=Path, action="append", default=[],
                   help="also count the gateway from this source tree (repeatable)")
    p.add_argument("--kind", dest="kinds", action="append", choices=KINDS,
                   help="count this kind of request only (repeatable)")
    args = p.parse_args(argv)
    report(asyncio.run(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
