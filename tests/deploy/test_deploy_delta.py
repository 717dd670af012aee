"""A delta broadcast over gRPC: real site processes keep the model they trained from, rebuild
each round's model from the server's chain of changes, and the run equals the simulation with
the same bytes down; a site whose kept model drifted, or that restarted, is sent the whole model
instead; a server resumed from its store goes on sending chains."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
from deploy_helpers import (
    HERE,
    experiment_text,
    federation,
    finish,
    free_port,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore

SITES = ["site-a", "site-b", "site-c"]
D = 64 * 10 + 10
"""Entries of the softmax model on digits."""
ONE_LINK = 7 + 4 + 18 + 9 + D
"""A chain of one 8-bit link: chain head, link length, envelope, codec params, one byte an entry."""


def delta(text: str) -> str:
    marked = text.replace(
        'name = "fedavg"\n',
        'name = "fedavg"\nbroadcast = { kind = "uniform", bits = 8, delta_window = 3 }\n',
    )
    assert marked != text
    return marked


def secure(text: str) -> str:
    """``text`` with a secure_sum stage (no dropouts or corrupt clients assumed: 3 sites)."""
    return text + (
        '\n[[stages]]\nkind = "secure_sum"\nclip = 100.0\nbits = 24\n'
        "dropout_rate = 0.0\ncorrupt_fraction = 0.0\n"
    )


def deploy(tmp_path: Path, text: str, drifting: str | None = None) -> tuple[list, object, str]:
    experiment = Experiment.from_toml(text)
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(experiment, tmp_path / "data")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    launcher = [str(HERE / "diverging_site.py")]
    sites = [
        start_site(
            tmp_path, server.port, fed, s, d, **({"launcher": launcher} if s == drifting else {})
        )
        for s, d in zip(SITES, data, strict=True)
    ]
    try:
        assert finish(server.process) == 0, server.output()
        assert all(finish(s) == 0 for s in sites)
    finally:
        stop(server.process, *sites)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        assert store.run(server.run_id).status == "completed"
        checkpoint = store.latest_checkpoint(server.run_id)
        assert checkpoint is not None
        rounds = store.rounds(server.run_id)
    return rounds, checkpoint.state.params, server.output()


def simulate(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    with RunStore.open(tmp_path / "sim.db") as store:
        return run_experiment(Experiment.from_toml(text), store).history


def test_a_delta_broadcast_over_grpc_equals_the_simulation(tmp_path: Path) -> None:
    text = delta(experiment_text(rounds=5, cohort=2, federated_eval=False))
    rounds, params, _ = deploy(tmp_path, text)
    simulated = simulate(tmp_path, text)
    np.testing.assert_allclose(params, simulated.params, atol=1e-5)
    whole = 4 * D
    for deployed, local in zip(rounds, simulated.records, strict=True):
        assert deployed.accepted == local.accepted
        m = deployed.metrics
        assert m["bytes_down"] == local.metrics["bytes_down"]
        assert m["bytes_down"] < m["wire_bytes_down"] < m["bytes_down"] + 2 * 200
    down = [r.metrics["bytes_down"] for r in rounds]
    assert down[0] == 2 * whole
    assert sum(down) < 0.6 * 5 * 2 * whole, "chains replaced most whole models"


def test_a_drifted_site_is_sent_the_whole_model(tmp_path: Path) -> None:
    text = delta(experiment_text(rounds=3, cohort=3, federated_eval=False))
    rounds, params, _ = deploy(tmp_path, text, drifting="site-b")
    simulated = simulate(tmp_path, text)
    np.testing.assert_allclose(params, simulated.params, atol=1e-5)
    simulated_down = [r.metrics["bytes_down"] for r in simulated.records]
    assert simulated_down == [3 * 4 * D] + 2 * [3 * ONE_LINK]
    # site-b's digest never matches the server's model: it gets 4 bytes an entry every round.
    assert [r.metrics["bytes_down"] for r in rounds] == [3 * 4 * D] + 2 * [2 * ONE_LINK + 4 * D]


def test_a_resumed_server_sends_chains_and_a_restarted_site_the_whole_model(
    tmp_path: Path,
) -> None:
    text = delta(experiment_text(rounds=4, cohort=3, min_cohort=2, federated_eval=False))
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(Experiment.from_toml(text), tmp_path / "data")
    args = ("--listen", f"127.0.0.1:{free_port()}", "--deadline", "30")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, *args)
    slow = "site_models:slow_digits"  # about 1 s a round, so the test acts mid-round
    kept = [
        start_site(tmp_path, server.port, fed, s, d, model=slow)
        for s, d in zip(SITES[:2], data[:2], strict=True)
    ]
    lost = start_site(tmp_path, server.port, fed, "site-c", data[2], model=slow)
    restarted = []
    try:
        wait_for(server.output, r"^round 0: 3/3")
        lost.kill()  # while it trains round 1: it loses the model it held
        wait_for(server.output, r"^round 1: 2/3")
        server.process.kill()
        server.process.wait()
        restarted.append(start_site(tmp_path, server.port, fed, "site-c", data[2]))
        again = start_server(tmp_path, tmp_path / "exp.toml", fed, *args)
        assert finish(again.process) == 0, again.output()
        assert all(finish(s) == 0 for s in [*kept, *restarted])
    finally:
        stop(server.process, *kept, lost, *restarted)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        rounds = store.rounds(server.run_id)
    down = [r.metrics["bytes_down"] for r in rounds]
    whole = 4 * D
    assert [r.accepted for r in rounds] == [(0, 1, 2), (0, 1), (0, 1, 2), (0, 1, 2)]
    assert down[:2] == [3 * whole, 3 * ONE_LINK]
    # Round 2, from the store: site-a and -b say they hold round 1's model (a chain of one link)
    # or, if round 2's tasks reached them before the server died, round 2's (a chain of no
    # links: 7 bytes); the restarted site-c holds nothing and is sent the whole model.
    assert down[2] - whole in {2 * ONE_LINK, ONE_LINK + 7, 2 * 7}
    assert down[3] == 3 * ONE_LINK


def test_secure_aggregation_over_grpc_sends_chains(tmp_path: Path) -> None:
    text = delta(experiment_text(rounds=3, cohort=3, min_cohort=2, federated_eval=False))
    text = secure(text)
    rounds, params, _ = deploy(tmp_path, text)
    simulated = simulate(tmp_path, text)
    np.testing.assert_allclose(params, simulated.params, atol=1e-6)
    for deployed, local in zip(rounds, simulated.records, strict=True):
        assert deployed.accepted == local.accepted == (0, 1, 2)
        assert deployed.metrics["bytes_down"] == local.metrics["bytes_down"]
    # Round 0 of the protocol carries the model: float32 at first contact, then a chain of one
    # 8-bit link per site (plus the task's own fields and framing).
    advertise = [r.metrics["wire_bytes_down.secagg.advertise"] for r in rounds]
    assert 3 * 4 * D < advertise[0] < 3 * 4 * D + 600
    assert all(3 * ONE_LINK < a < 3 * ONE_LINK + 600 for a in advertise[1:])


def test_secure_aggregation_over_grpc_sends_a_plain_broadcast_codec(tmp_path: Path) -> None:
    """Without a delta window SecAgg+'s round 0 carries the model as the broadcast codec's
    payload (float16 here: about two bytes an entry), and the run equals the simulation."""
    text = experiment_text(rounds=2, cohort=3, min_cohort=2, federated_eval=False)
    marked = text.replace('name = "fedavg"\n', 'name = "fedavg"\nbroadcast = "float16"\n')
    assert marked != text
    marked = secure(marked)
    rounds, params, _ = deploy(tmp_path, marked)
    simulated = simulate(tmp_path, marked)
    np.testing.assert_allclose(params, simulated.params, atol=1e-6)
    for deployed, local in zip(rounds, simulated.records, strict=True):
        assert deployed.accepted == local.accepted == (0, 1, 2)
        assert deployed.metrics["bytes_down"] == local.metrics["bytes_down"]
        advertise = deployed.metrics["wire_bytes_down.secagg.advertise"]
        assert 3 * 2 * D < advertise < 3 * 2 * D + 600


def wait_for(output, pattern: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, output(), re.MULTILINE):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in the server's output:\n{output()}")
