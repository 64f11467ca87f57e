"""Regenerate the Python gRPC stubs from ``proto/``: ``python -m emotune.grpc.protogen PROTO_DIR OUT_DIR``.

The stubs land in ``OUT_DIR/emotune/v1`` and are committed; ``tests/emotune/grpc/test_protos.py`` regenerates into a
temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def generate(proto_root: Path, out_root: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(proto_root.rglob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(proto_root)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {proto_root}")
    package_dirs = {out_root / p.parent.relative_to(proto_root) for p in protos}
    for package in package_dirs:
        (package / "__init__.py").touch()
    return sorted(f for d in package_dirs for f in d.iterdir() if f.suffix in {".py", ".pyi"})


if __name__ == "__main__":
    proto_dir, out_dir = (Path(a).resolve() for a in sys.argv[1:3])
    for path in generate(proto_dir, out_dir):
        print(path)
