"""``python corrupting_site.py <fedloom client arguments>``: a real ``fedloom client`` process
whose encoded update is damaged on its way out (one byte of the codec's body flipped after the
site encoded it), as a bad link or a faulty site would send it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from fedloom.cli import main
from fedloom.core.messages import ClientResult
from fedloom.transport import site

original = site._train_reply


def damaged(task: int, result: ClientResult, chunk_bytes: int, *rest: Any) -> Iterator[object]:
    assert result.payload is not None, "this site expects the run to encode its updates"
    payload = bytearray(result.payload)
    payload[len(payload) // 2] ^= 0xFF
    print(f"damaging task {task}'s payload of {len(payload)} bytes", flush=True)
    return original(task, replace(result, payload=bytes(payload)), chunk_bytes, *rest)


site._train_reply = damaged  # type: ignore[assignment]
main(sys.argv[1:])
