"""``python crashing_site.py PHASE ROUND <fedloom client arguments>``: a real ``fedloom client``
process that dies (``os._exit``, as ``kill -9`` would leave it) the moment the server's request
for secure aggregation round PHASE (``mask`` or ``unmask``) of training round ROUND arrives,
so it vanishes at a chosen point of the protocol."""

from __future__ import annotations

import os
import sys

from fedloom.cli import main
from fedloom.transport import secure_site
from fedloom.transport.secure_site import Request, SecureSite

PHASE, ROUND = sys.argv[1], int(sys.argv[2])
MESSAGES = {"share": "KeyRoster", "mask": "MaskingRequest", "unmask": "UnmaskRequest"}
original = SecureSite.step


def step(self: SecureSite, message: Request) -> object:
    session = self.clients.sessions.get(self.client) if self.client is not None else None
    now = session.setup.round if session is not None else None
    if type(message).__name__ == MESSAGES[PHASE] and now == ROUND:
        print(f"crashing on the {PHASE} request of round {ROUND}", flush=True)
        os._exit(3)
    return original(self, message)


secure_site.SecureSite.step = step  # type: ignore[method-assign]
main(sys.argv[3:])
