"""``python gated_site.py GATE ROUND <fedloom client arguments>``: a real ``fedloom client``
process that, from training round ROUND on, waits before training while the file GATE exists, so
a test can hold a round open while it restarts another site."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fedloom.cli import main
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.deploy import site

GATE, ROUND = Path(sys.argv[1]), int(sys.argv[2])
original = site.SiteProgram.train


def train(self: site.SiteProgram, broadcast: Broadcast) -> ClientResult:
    while broadcast.round >= ROUND and GATE.exists():
        time.sleep(0.05)
    return original(self, broadcast)


site.SiteProgram.train = train  # type: ignore[method-assign]
main(sys.argv[3:])
