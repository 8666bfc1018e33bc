"""What ``serve --workers N`` buys: chat throughput at concurrency 64 with 1 and with N workers.

```sh
.venv/bin/python -m benchmarks.bench_workers             # about a minute
.venv/bin/python -m benchmarks.bench_workers --workers 4 --rounds 3
```

Starts ``inference-gateway serve`` (auth off, access log off, the built-in mock model, so that no
upstream process takes a core) once with one worker and once with ``--workers`` N, in turn, and
measures each at 64 keep-alive connections of non-streaming chat (which the kernel spreads over the
workers as they connect), in interleaved rounds: with ``wrk`` when it is installed (``apt-get
install wrk``: a load generator in C, which leaves the gateway most of the cores), else with the
Python load generator of ``loadgen.py``, which takes about a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench import Processes, free_port, log, wait_healthy
from benchmarks.loadgen import Target, throughput


async def _start(procs: Processes, name: str, workers: int) -> str:
    config = procs.workdir / f"{name}.yaml"
    config.write_text(json.dumps({
        "auth": {"enabled": False}, "log_level": "warning", "access_log": "off",
        "storage": {"data_dir": str(procs.workdir / name)},
        "models": [{"id": "bench-mock", "task": "chat", "provider": "mock"}]}))
    http, grpc_port = free_port(), free_port()
    script = str(Path(sys.executable).parent / "inference-gateway")
    await procs.spawn(name, script, "serve", "--config", str(config), "--host", "127.0.0.1",
                      "--http-port", str(http), "--grpc-port", str(grpc_port),
                      "--workers", str(workers))
    await wait_healthy(f"http://127.0.0.1:{http}/health/ready", procs)
    await asyncio.sleep(1.0)  # the other workers finish starting (they answer the same port)
    return f"http://127.0.0.1:{http}/v1"


BODY = json.dumps({"model": "bench-mock", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "What is deep learning?"}]})
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk(url: str, seconds: float, script: Path) -> float:
    """Requests per second by wrk (one thread, 64 connections); raises on errors."""
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{max(1, int(seconds))}s", "-s", str(script),
                          url + "/chat/completions"], capture_output=True, text=True,
                         timeout=seconds + 30, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors: {out}")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if match is None:
        raise RuntimeError(f"no rate in wrk's output: {out}")
    return float(match.group(1))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"1": [], str(args.workers): []}
    with tempfile.TemporaryDirectory(prefix="igw-workers-") as tmp:
        procs = Processes(Path(tmp))
        try:
            targets = {}
            for n in (1, args.workers):
                url = await _start(procs, f"workers-{n}", n)
                targets[str(n)] = Target(f"{n} worker(s)", url, "bench-mock", "bench-mock")
            wrk = shutil.which("wrk") is not None and not args.python_load
            script = procs.workdir / "post.lua"
            script.write_text(WRK_SCRIPT)
            for r in range(args.rounds):
                for key, target in targets.items():
                    log(f"round {r + 1}/{args.rounds}: {target.name} "
                        f"({'wrk' if wrk else 'python load generator'})")
                    if wrk:
                        await asyncio.to_thread(_wrk, target.base_url, 1.0, script)  # warm-up
                        rates[key].append(await asyncio.to_thread(
                            _wrk, target.base_url, args.seconds, script))
                    else:
                        result = await throughput(target, concurrency=64,
                                                  seconds=args.seconds, warmup=1.0,
                                                  stream=False)
                        rates[key].append(result.rps)
        finally:
            await procs.stop_all()
    one = sorted(rates["1"])[len(rates["1"]) // 2]
    many = sorted(rates[str(args.workers)])[len(rates[str(args.workers)]) // 2]
    return {"load": "python" if args.python_load or shutil.which("wrk") is None else "wrk",
            "rps": rates, "median_1": one, f"median_{args.workers}": many, "ratio": many / one}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--python-load", action="store_true",
                   help="use the Python load generator even when wrk is installed")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
