"""``python diverging_site.py <fedloom client arguments>``: a real ``fedloom client`` process
whose kept model drifts from the one it trained from (one entry nudged after every round), as a
site with a bug or a bit flip in memory would; it reports the digest of what it really holds."""

from __future__ import annotations

import sys

import numpy as np

from fedloom.cli import main
from fedloom.compression.chain import model_digest
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.deploy.site import SiteProgram

original = SiteProgram.train


def drifting(self: SiteProgram, broadcast: Broadcast) -> ClientResult:
    result = original(self, broadcast)
    assert self.held is not None, "this site expects a delta broadcast"
    round_, model, _ = self.held
    model = model.copy()
    model[0] += np.float32(1e-3)
    self.held = (round_, model, model_digest(model))
    print(f"round {round_}: drifted the kept model", flush=True)
    return result


SiteProgram.train = drifting  # type: ignore[method-assign]
main(sys.argv[1:])
