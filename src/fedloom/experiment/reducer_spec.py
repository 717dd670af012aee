"""``[algorithm] reducer``: a run file's choice of reducer, robust or not.

::

    [algorithm]
    name = "fedavg"
    reducer = "krum"                       # any name in fedloom.robust.REDUCERS
    attackers = 2                          # f, the Byzantine updates to tolerate
    reducer_options = { select = 5 }       # the reducer's other keyword options

``attackers`` and ``reducer_options`` are checked against the reducer's own signature, so the
accepted keys never drift from the code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from fedloom.experiment import checks
from fedloom.experiment.errors import ExperimentError, KeyPath
from fedloom.reducers import Reducer
from fedloom.robust import REDUCERS

AT: KeyPath = ("algorithm",)


def build_reducer(
    name: str | None, attackers: int | None, options: Mapping[str, object] | None
) -> Reducer | None:
    """The reducer these keys describe, or ``None`` to keep the recipe's own."""
    if name is None:
        for key, value in (("attackers", attackers), ("reducer_options", options)):
            if value is not None:
                raise ExperimentError((*AT, key), 'applies only with a reducer; set reducer = "…"')
        return None
    checks.choice((*AT, "reducer"), name, REDUCERS)
    factory = REDUCERS[name]
    accepted = checks.keyword_options(factory)
    given = dict(options or {})
    if options is not None and not isinstance(options, Mapping):
        raise ExperimentError(
            (*AT, "reducer_options"), f"must be a table, got {checks.kind_of(options)}"
        )
    if "attackers" in given:
        raise ExperimentError(
            (*AT, "reducer_options", "attackers"), "set attackers in [algorithm], not here"
        )
    if attackers is not None:
        checks.integer((*AT, "attackers"), attackers, minimum=0)
        if "attackers" not in accepted:
            raise ExperimentError(
                (*AT, "attackers"),
                f"reducer {checks.show(name)} takes no attackers; remove it or pick one of "
                + ", ".join(checks.show(n) for n, f in REDUCERS.items()
                            if "attackers" in checks.keyword_options(f)),
            )  # fmt: skip
    elif "attackers" in accepted and _required(factory, "attackers"):
        raise ExperimentError(
            (*AT, "attackers"),
            f"required by reducer {checks.show(name)}: how many Byzantine updates to tolerate",
        )
    checked = checks.options((*AT, "reducer_options"), given, factory, provided=("attackers",))
    arguments: dict[str, object] = dict(checked)
    if attackers is not None:
        arguments["attackers"] = attackers
    try:
        return factory(**arguments)
    except ValueError as error:
        raise checks.blamed((*AT, "reducer_options"), checked, error) from None


def _required(factory: Callable[..., object], name: str) -> bool:
    parameter = inspect.signature(factory).parameters.get(name)
    return parameter is not None and parameter.default is inspect.Parameter.empty


def min_cohort(
    name: str | None, attackers: int | None, options: Mapping[str, object] | None
) -> int:
    """The fewest updates the reducer these keys describe accepts (1 without a reducer)."""
    reducer = build_reducer(name, attackers, options)
    return int(getattr(reducer, "min_cohort", 1))
