"""The ``inference-gateway`` command: serve, core, edge, check-config (and tokens, see auth).

Exit codes: 0 success, 1 runtime failure, 2 bad usage or an invalid config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import start_http_server

from gateway_cli.tokens_cli import add_parser as add_tokens_parser
from gateway_cli.tokens_cli import note_config, print_bootstrap
from gateway_cli.tokens_cli import run as run_tokens
from gateway_common import access_log, tls, tracing
from gateway_common.config import ConfigError, GatewayConfig, load_config
from gateway_common.defaults import default_config
from gateway_core.registry import validate_providers
from gateway_core.server import start_core
from http_edge.app import start_edge

log = logging.getLogger("inference_gateway")

EXIT_CONFIG = 2


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="YAML config file (default: embedded defaults)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--data-dir", help="where the embedded store lives (default ./data)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inference-gateway",
        description="One governed front door for model servers: a gRPC core and an HTTP edge.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the core and the edge together")
    _add_common(serve)
    serve.add_argument("--http-port", type=int, help="HTTP port of the edge (default 8080)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port of the core (default 50051)")
    serve.add_argument("--workers", default="1", metavar="N",
                       help="processes serving the same ports (auto: one per core; default 1)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    core = sub.add_parser("core", help="run the gRPC core alone")
    _add_common(core)
    core.add_argument("--grpc-port", type=int, help="gRPC port (default 50051)")
    core.add_argument("--metrics-port", type=int, help="serve the core's /metrics on this port")

    edge = sub.add_parser("edge", help="run the HTTP edge alone, in front of a running core")
    _add_common(edge)
    edge.add_argument("--http-port", type=int, help="HTTP port (default 8080)")
    edge.add_argument("--core", metavar="HOST:PORT", help="address of the core")

    add_tokens_parser(sub)
    check = sub.add_parser("check-config", help="validate a config file and say what is wrong")
    check.add_argument("path", nargs="?", help="the YAML file (or use --config)")
    check.add_argument("--config", dest="config_opt", metavar="PATH")
    return parser


def resolve_config(args: argparse.Namespace) -> GatewayConfig:
    """The config file (or the embedded defaults) with command-line flags applied over it."""
    config = load_config(args.config) if getattr(args, "config", None) else default_config()
    listen = config.listen
    changes: dict[str, Any] = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "http_port", None) is not None:
        changes["http_port"] = args.http_port
    if getattr(args, "grpc_port", None) is not None:
        changes["grpc_port"] = args.grpc_port
    if getattr(args, "core", None):
        changes["core_address"] = args.core
    if getattr(args, "metrics_port", None) is not None:
        changes["core_metrics_port"] = args.metrics_port
    if changes:
        config = dataclasses.replace(config, listen=dataclasses.replace(listen, **changes))
    if getattr(args, "data_dir", None):
        config = dataclasses.replace(
            config, storage=dataclasses.replace(config.storage, data_dir=args.data_dir))
    if getattr(args, "log_level", None):
        config = dataclasses.replace(config, log_level=args.log_level)
    validate_providers(config)
    return config


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


Stopper = Callable[[], Awaitable[None]]


async def _run_until_signalled(
        start: Callable[[], Awaitable[tuple[Stopper, Stopper, Callable[[], None]]]],
        drain_seconds: float = 0.0) -> None:
    """Run until SIGINT or SIGTERM; then drain (readiness fails while requests are still served)
    for ``drain_seconds``, then stop (listeners close, in-flight requests finish within the
    grace period). A second signal during the drain stops at once."""
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop_event.set)
    drain, stop, hup = await start()
    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, hup)  # certificates and models
    try:
        await stop_event.wait()
        if drain_seconds > 0:
            stop_event.clear()
            log.info("draining for %g s before shutting down", drain_seconds)
            await drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), drain_seconds)
    finally:
        log.info("shutting down")
        await stop()
        access_log.flush()


async def _serve(config: GatewayConfig, *, core: bool, edge: bool,
                 config_path: str | None = None) -> None:
    reloads: set[asyncio.Task[None]] = set()

    async def start() -> tuple[Stopper, Stopper, Callable[[], None]]:
        stoppers: list[Stopper] = []
        drainers: list[Callable[[], Awaitable[None] | None]] = []
        if core:
            core_handle = await start_core(config, config_path=config_path)
            stoppers.append(lambda: core_handle.stop(config.timeouts.shutdown_grace_seconds))
            drainers.append(core_handle.drain)
            if config.listen.core_metrics_port and not edge:
                start_http_server(config.listen.core_metrics_port, addr=config.listen.host)
            print(f"gRPC core   {config.listen.host}:{core_handle.port}", flush=True)
        if edge:
            try:
                in_process = (core_handle.in_process
                              if core and config.listen.core_transport == "local" else None)
                edge_handle = await start_edge(
                    config, core=in_process, buffers=core_handle.buffers if core else None)
            except BaseException:
                for s in stoppers:  # the core started: stop it before reporting the failure
                    await s()
                raise
            stoppers.insert(0, edge_handle.stop)  # the edge stops first, then the core
            drainers.append(edge_handle.drain)
            scheme = "https" if config.listen.tls.enabled else "http"
            base = f"{scheme}://{config.listen.host}:{edge_handle.port}"
            print(f"HTTP edge   {base}  (OpenAI base URL: {base}/v1)", flush=True)
        if core and core_handle.auth is not None:
            print_bootstrap(core_handle.auth.bootstrap, config, core_handle.port,
                            edge_handle.port if edge else None)

        async def stop() -> None:
            for s in stoppers:
                await s()

        async def drain() -> None:
            for d in drainers:
                result = d()
                if result is not None:
                    await result

        def hup() -> None:
            """SIGHUP: re-read the certificates and (in the core) the config's models."""
            tls.reload()
            if core:
                task = asyncio.get_running_loop().create_task(_reload(core_handle))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

        return drain, stop, hup

    await _run_until_signalled(start, config.timeouts.drain_seconds)


async def _reload(handle: Any) -> None:
    try:
        await handle.reload()
    except ConfigError as exc:
        log.error("config reload refused, the running models stay: %s", exc)


def _run(coro: Awaitable[None]) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(coro)  # type: ignore[arg-type]


def _workers(value: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError("a number of processes (1 or more) or auto")
    return int(value)


def _supervise(workers: int, argv: Sequence[str], config: GatewayConfig) -> int:
    """``serve --workers N``: N worker processes of ``serve`` on the same ports (SO_REUSEPORT:
    the kernel spreads connections), sharing the store; /metrics sums their counters and
    histograms (prometheus-client's multiprocess mode, in a directory made here). Signals are
    passed on to the workers; it ends when they all have."""
    import subprocess
    import tempfile

    args = [a for i, a in enumerate(argv) if not (a.startswith("--workers")
                                                   or (i > 0 and argv[i - 1] == "--workers"))]
    if config.listen.http_port == 0 or config.listen.grpc_port == 0:
        print("--workers needs fixed ports (not 0)", file=sys.stderr)
        return EXIT_CONFIG
    with tempfile.TemporaryDirectory(prefix="igw-metrics-") as metrics_dir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        procs = [subprocess.Popen([sys.executable, "-m", "gateway_cli.cli", *args,
                                   "--reuse-port"], env=env) for _ in range(workers)]
        log.info("serving with %d workers (pids %s)", workers, ", ".join(str(p.pid)
                                                                       for p in procs))

        def forward(signum: int, _frame: Any) -> None:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        codes = [p.wait() for p in procs]
    return max(codes) if any(codes) else 0


def check_config(path: str | None) -> int:
    if not path:
        print("check-config: give the config file's path", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_config(path)
        validate_providers(config)
    except ConfigError as exc:
        print(f"{path}: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: OK ({len(config.models)} models)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "tokens":
        return run_tokens(args)
    if args.command == "check-config":
        return check_config(args.path or args.config_opt)
    if args.command in ("serve", "core", "edge"):
        try:
            config = resolve_config(args)
        except ConfigError as exc:
            print(f"invalid config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if args.command == "serve":
            try:
                workers = _workers(args.workers)
            except ValueError as exc:
                print(f"--workers: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            if workers > 1:
                return _supervise(workers, argv if argv is not None else sys.argv[1:], config)
            if args.reuse_port:
                config = dataclasses.replace(
                    config, listen=dataclasses.replace(config.listen, reuse_port=True))
        _setup_logging(config.log_level)
        access_log.setup(config.access_log)
        tracing.setup(config.tracing.enabled)
        try:
            if args.command != "edge":  # for ``tokens`` on this data dir
                note_config(config, args.config)
            _run(_serve(config, core=args.command != "edge", edge=args.command != "core",
                        config_path=getattr(args, "config", None)))
        except ConfigError as exc:  # found at start (auth: keys, the admin credential, the DSN)
            print(f"invalid config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except OSError as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 1
        return 0
    parser.print_help()
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
