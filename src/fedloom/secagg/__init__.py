"""Secure aggregation: SecAgg+ (Bell et al. 2020) over a neighbour graph, the complete graph
being Bonawitz et al. 2017. The server learns the sum of the surviving clients' updates and
nothing else, even when clients drop out midway.

``algorithm.with_stages(fl.secure_sum(clip=1.0))`` turns it on; the engine then runs each round
through :mod:`fedloom.engine.secure_rounds`. The parts: :mod:`~fedloom.secagg.primitives`
(X25519, HKDF, AES-GCM, AES-CTR from ``cryptography``), :mod:`~fedloom.secagg.shamir`,
:mod:`~fedloom.secagg.graph`, :mod:`~fedloom.secagg.quantize`, the typed
:mod:`~fedloom.secagg.messages`, and the two state machines :mod:`~fedloom.secagg.client` and
:mod:`~fedloom.secagg.server`.
"""

from fedloom.secagg.client import ClientSession, ProtocolAbort
from fedloom.secagg.graph import GraphParameters, choose_parameters
from fedloom.secagg.server import SecureAggregationAborted, ServerSession
from fedloom.secagg.stage import SecureSum, secure_sum

__all__ = [
    "ClientSession",
    "GraphParameters",
    "ProtocolAbort",
    "SecureAggregationAborted",
    "SecureSum",
    "ServerSession",
    "choose_parameters",
    "secure_sum",
]
