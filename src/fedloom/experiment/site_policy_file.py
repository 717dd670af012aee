"""A site's own policy file, for ``fedloom client --policy``.

The file holds the keys of a run file's ``[[sites]]`` table except ``identity`` (the site's
certificate names it), at the top level::

    # site-policy.toml: what this site lets a run do with its data
    secure_aggregation = true       # refuse runs without secure aggregation
    dp = false                      # require differential privacy?
    max_epsilon = 4.0               # the largest planned ε it accepts
    algorithms = ["fedavg", "fedprox"]
    models = ["mlp:*"]              # model ids (see fedloom.experiment.policy_spec.model_id)
    recipients = ["CN=consortium-board"]

It is read and checked before the site connects; a mistake is an :class:`ExperimentError`
naming file, line and key, as a run file's are.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from fedloom.experiment import checks
from fedloom.experiment.errors import ExperimentError, toml_syntax_error
from fedloom.policy import SitePolicy, from_mapping

KEYS = tuple(f.name for f in dataclasses.fields(SitePolicy) if f.name != "identity")
"""The keys a site policy file may set."""


def site_policy_from_toml(text: str, identity: str, *, source: str = "<policy>") -> SitePolicy:
    """The policy ``text`` describes for the site named ``identity``."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise toml_syntax_error(error, source) from None
    try:
        if "identity" in table:
            raise ExperimentError(
                ("identity",),
                "a site's policy file names no identity: the site's certificate does "
                f"(accepted keys: {', '.join(KEYS)})",
            )
        checks.no_unknown_keys((), table, KEYS)
        try:
            policy: SitePolicy = from_mapping(SitePolicy, {**table, "identity": identity})
        except ValueError as error:
            raise checks.blamed((), dict(table), error) from None
    except ExperimentError as error:
        raise error.at(source, text) from None
    return policy


def load_site_policy(path: str | os.PathLike[str], identity: str) -> SitePolicy:
    """Read and check the site policy file at ``path`` for the site named ``identity``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ExperimentError(
            (), f"cannot read the site policy file: {error.strerror or error}", str(path)
        ) from None
    except UnicodeDecodeError as error:
        raise ExperimentError(
            (), f"the site policy file is not UTF-8 text: {error}", str(path)
        ) from None
    return site_policy_from_toml(text, identity, source=str(path))
