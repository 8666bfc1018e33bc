"""The committed stubs in inference_gateway/ match protos/ (regenerate: scripts/gen_protos.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_protos  # noqa: E402


def _normalise(text: str) -> str:
    """Drop the lines that only name generator versions (they differ between tool releases)."""
    skip = ("# Protobuf Python Version", "GRPC_GENERATED_VERSION", "_runtime_version.", "Protobuf ",
            "    Protobuf", "    _protobuf_runtime_version")
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith(skip)
                     and not any(s in line for s in ("_runtime_version.Validate",)))


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    gen_protos.generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "inference_gateway").rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts)
    assert fresh == committed, "inference_gateway/ does not hold exactly the generated files"
    for rel in fresh:
        if rel.suffix == ".py" and rel.name.endswith("_pb2.py"):
            continue  # compared through their descriptors below
        new, old = (tmp_path / rel).read_text(), (ROOT / rel).read_text()
        assert _normalise(new) == _normalise(old), (
            f"{rel} is stale: run `python scripts/gen_protos.py`")


def _strip_json_names(messages: Any) -> None:
    for m in messages:
        for f in m.field:
            f.ClearField("json_name")
        _strip_json_names(m.nested_type)


def test_descriptors_match_the_protos(tmp_path: Path) -> None:
    """Each committed *_pb2 module carries exactly the descriptor protoc makes of its .proto."""
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    include = str(Path(protoc.__file__).parent / "_proto")
    assert protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"-I{include}",
                        f"--descriptor_set_out={out}", *gen_protos.proto_files()]) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert fds.file
    for fd in fds.file:
        module = importlib.import_module(fd.name.replace("/", ".").removesuffix(".proto") + "_pb2")
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        fresh = descriptor_pb2.FileDescriptorProto()
        fresh.CopyFrom(fd)
        fresh.ClearField("source_code_info")
        _strip_json_names(fresh.message_type)  # protoc's Python output leaves them out
        assert committed == fresh, f"stubs for {fd.name} are stale: run scripts/gen_protos.py"
