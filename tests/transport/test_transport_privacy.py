"""A run with differential privacy refuses, at Hello, a site that does not run its client half."""

from __future__ import annotations

import threading

from fedloom.core.layout import Field, Layout
from fedloom.transport import (
    GrpcExecutor,
    PrivacyOptions,
    ServiceConfig,
    Site,
    SiteRefused,
    TrainingConfig,
)


def _join(training: TrainingConfig, *, private: bool) -> list[BaseException]:
    layout = Layout((Field("w", (10,)),))
    config = ServiceConfig(
        run="r", layout=layout, training=training, sites=("old-site",), verifier=None
    )
    failure: list[BaseException] = []
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None) as executor:
        site = Site(
            target=f"127.0.0.1:{executor.port}", name="old-site", layout=layout,
            prepare=lambda _: None, credentials=None, private=private,  # type: ignore[arg-type,return-value]
            give_up_after=5.0,
        )  # fmt: skip

        def run() -> None:
            try:
                site.run()
            except SiteRefused as error:
                failure.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        if private:
            assert executor.wait_for_sites(1, timeout=20)
        thread.join(timeout=1 if private else 30)
    return failure


def test_site_without_the_privacy_feature_is_refused_a_private_run() -> None:
    private = TrainingConfig("fedavg", {"lr": 0.1}, privacy=PrivacyOptions("gaussian", 1.0, 1.1))
    (failure,) = _join(private, private=False)
    assert "this run has differential privacy" in str(failure)
    assert "site old-site's client does not run its client half" in str(failure)
    assert "'dp.central.v1'" in str(failure)
    assert _join(private, private=True) == []  # a site that clips joins
