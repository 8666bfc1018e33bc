"""Regenerate the Python stubs in ``inference_gateway/`` from ``protos/``.

Run: ``python scripts/gen_protos.py``. The stubs are committed; ``tests/test_protos.py`` fails
when they no longer match the ``.proto`` files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "inference_gateway"


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))


def generate(out_root: Path) -> None:
    """Compile every proto under ``protos/`` into ``out_root`` (messages, gRPC stubs, .pyi)."""
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out_root}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for pkg in [out_root / "inference_gateway", *(out_root / "inference_gateway").rglob("*")]:
        if pkg.is_dir():
            (pkg / "__init__.py").touch()
    (out_root / "inference_gateway" / "py.typed").touch()


def main() -> int:
    if OUT.exists():
        shutil.rmtree(OUT)
    generate(ROOT)
    print(f"generated stubs for {', '.join(proto_files())} in {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
