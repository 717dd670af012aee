"""A site's own policy file (``fedloom client --policy``): the keys of a ``[[sites]]`` table but
identity, checked with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.experiment import ExperimentError
from fedloom.experiment.site_policy_file import KEYS, load_site_policy, site_policy_from_toml
from fedloom.policy import RunTerms, SitePolicy, site_refusals

TEXT = """
# what this site lets a run do with its data
secure_aggregation = true
max_epsilon = 4
algorithms = ["fedavg", "fedprox"]
models = ["mlp:*"]
recipients = ["CN=board"]
"""


def test_the_file_reads_as_the_sites_policy(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(TEXT)
    policy = load_site_policy(tmp_path / "site.toml", "hospital-a")
    assert policy == SitePolicy(
        "hospital-a", max_epsilon=4, secure_aggregation=True, algorithms=("fedavg", "fedprox"),
        models=("mlp:*",), recipients=("CN=board",),
    )  # fmt: skip
    assert set(KEYS) == {"max_epsilon", "secure_aggregation", "dp", "algorithms", "models",
                         "recipients"}  # fmt: skip
    planned = RunTerms("fedavg", "mlp:64", secure_aggregation=True, epsilon=8.0)
    assert site_refusals(policy, planned) == ["the run plans ε = 8, above the site's limit ε = 4"]
    assert site_policy_from_toml("", "s") == SitePolicy("s")  # an empty file allows anything


def test_mistakes_name_file_line_and_key(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError) as bad:
        site_policy_from_toml(TEXT.replace("max_epsilon = 4", "max_epsilon = 0"), "s",
                              source="site.toml")  # fmt: skip
    assert str(bad.value) == "site.toml:4: key 'max_epsilon': must be a number > 0, got 0"
    with pytest.raises(ExperimentError, match=r"^site.toml:3: key 'dp': must be true or false"):
        site_policy_from_toml('\n\ndp = "yes"\n', "s", source="site.toml")
    with pytest.raises(ExperimentError, match=r"cannot read the site policy file"):
        load_site_policy(tmp_path / "missing.toml", "s")
