"""The committed generated code is what ``make proto`` makes from the committed schema."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_schema(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    status = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         str(ROOT / "proto/fedloom/v1/fedloom.proto")]
    )  # fmt: skip
    assert status == 0
    committed = ROOT / "src/fedloom/transport/proto/v1"
    for name in ("fedloom_pb2.py", "fedloom_pb2.pyi"):
        made = (tmp_path / "fedloom/v1" / name).read_text()
        assert made == (committed / name).read_text(), f"run `make proto`: {name} is stale"
