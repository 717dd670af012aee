"""A run's terms on the wire, and a site's refusal of them.

The server states what its run asks of the sites (:class:`~fedloom.policy.RunTerms`: the
algorithm, the model's id, secure aggregation, the planned ε and δ, who receives the model) in
its ``Welcome``. A site with its own :class:`~fedloom.policy.SitePolicy` checks them
(:func:`refusal`) before it builds its client program or takes any task, and answers terms it
refuses with a ``Refusal`` message naming why. Nothing from the wire is trusted: the decoder
checks what it reads and raises :class:`ProtocolError`.
"""

from __future__ import annotations

import math

from fedloom.policy import RunTerms, SitePolicy, site_refusals
from fedloom.transport.codec import MAX_NAME, ProtocolError
from fedloom.transport.proto.v1 import fedloom_pb2 as pb

MAX_RECIPIENTS = 256
MAX_REASON = 1000
"""The most characters of a site's refusal reason the server keeps."""


def terms_to_pb(terms: RunTerms) -> pb.RunTerms:
    message = pb.RunTerms(
        algorithm=terms.algorithm,
        model=terms.model,
        secure_aggregation=terms.secure_aggregation,
        recipients=list(terms.recipients),
    )
    if terms.epsilon is not None:
        message.epsilon = float(terms.epsilon)
    if terms.delta is not None:
        message.delta = float(terms.delta)
    return message


def terms_from_pb(message: pb.RunTerms) -> RunTerms:
    """The run's terms as the server stated them; :class:`ProtocolError` if malformed."""
    for name in ("algorithm", "model"):
        value = getattr(message, name)
        if not value or len(value) > MAX_NAME:
            raise ProtocolError(f"run terms: {name} must be 1 to {MAX_NAME} characters")
    if len(message.recipients) > MAX_RECIPIENTS or any(
        not r or len(r) > MAX_NAME for r in message.recipients
    ):
        raise ProtocolError(
            f"run terms: at most {MAX_RECIPIENTS} recipients of 1 to {MAX_NAME} characters"
        )
    epsilon = message.epsilon if message.HasField("epsilon") else None
    delta = message.delta if message.HasField("delta") else None
    if epsilon is not None and (math.isnan(epsilon) or not epsilon > 0):
        raise ProtocolError(f"run terms: epsilon must be > 0 (or +inf), got {epsilon!r}")
    if delta is not None and not 0 <= delta < 1:
        raise ProtocolError(f"run terms: delta must be in [0, 1), got {delta!r}")
    return RunTerms(
        algorithm=message.algorithm,
        model=message.model,
        secure_aggregation=message.secure_aggregation,
        epsilon=epsilon,
        delta=delta,
        recipients=tuple(message.recipients),
    )


def refusal(policy: SitePolicy, welcome: pb.Welcome) -> str | None:
    """Why ``policy`` refuses the run ``welcome`` describes; None if it accepts.

    A server that states no terms (an older one) is refused: the site could not check them."""
    if not welcome.HasField("terms"):
        return (
            "the server did not state the run's terms (algorithm, model, secure aggregation, "
            "privacy budget, recipients), so this site's policy cannot be checked"
        )
    reasons = site_refusals(policy, terms_from_pb(welcome.terms))
    return "; ".join(reasons) if reasons else None


def refusal_message(reason: str) -> pb.SiteMessage:
    return pb.SiteMessage(refusal=pb.Refusal(reason=reason[:MAX_REASON]))
