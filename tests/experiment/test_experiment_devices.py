"""``[devices]`` in run files: validated, round-tripped, and run through the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.engine import RoundRecord, ServerState
from fedloom.experiment import DevicesSpec, Experiment, ExperimentError, load_experiment
from fedloom.experiment.specs import BufferedSpec
from fedloom.runner import run_experiment
from fedloom.store import RunStore, StoreError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-devices-fednova.toml"


def test_the_devices_example_runs_with_stragglers_cut_and_a_virtual_clock(tmp_path: Path) -> None:
    experiment = load_experiment(EXAMPLE)
    assert experiment.devices == DevicesSpec(
        speed=1.0, speed_sigma=1.0, downlink=2e5, uplink=5e4, bandwidth_sigma=0.5,
        availability=0.9, dropout=0.05, seconds_per_example=0.01, deadline=1.0, keep=20,
        partial_work=True,
    )  # fmt: skip
    assert Experiment.from_toml(experiment.to_toml()) == experiment
    with RunStore.open(tmp_path / "runs.db") as store:
        outcome = run_experiment(experiment, store)
        rounds = store.rounds(outcome.run_id)
    assert len(rounds) == 20
    assert all(len(r.cohort) == 30 for r in rounds)
    assert all(len(r.accepted) <= 20 for r in rounds)
    reasons = " ".join(x.reason for r in rounds for x in r.rejected)
    assert "over-selected" in reasons
    assert "unavailable" in reasons
    clocks = [r.metrics["sim_clock"] for r in rounds]
    assert clocks == sorted(clocks)
    assert all(0 < r.metrics["sim_round_seconds"] <= 1.0 for r in rounds)
    assert outcome.history.last("test_accuracy") > 0.8


def test_device_settings_are_checked_before_anything_runs(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    bad = text.replace("deadline = 1.0            # simulated seconds\n", "")
    with pytest.raises(ExperimentError, match=r"key 'devices.partial_work': needs a deadline"):
        Experiment.from_toml(bad, source="x.toml")
    with pytest.raises(ExperimentError, match=r"x.toml:\d+: key 'devices.keep': over-selection"):
        Experiment.from_toml(text.replace("keep = 20", "keep = 30"), source="x.toml")
    with pytest.raises(
        ExperimentError, match=r"key 'devices.dropout': must be a number in \[0, 1\]"
    ):
        Experiment.from_toml(text.replace("dropout = 0.05", "dropout = 1.5"), source="x.toml")
    with pytest.raises(ExperimentError, match=r"key 'devices.sped': unknown key.*did you mean"):
        Experiment.from_toml(text.replace("speed = 1.0 ", "sped = 1.0 "), source="x.toml")


def test_trace_files_resolve_next_to_the_run_file(tmp_path: Path) -> None:
    rows = "\n".join(f"{c},1.0,inf,inf,1,0" for c in range(50))
    (tmp_path / "phones.csv").write_text(
        "client,speed,downlink,uplink,availability,dropout\n" + rows + "\n"
    )
    text = EXAMPLE.read_text().replace("speed = 1.0 ", 'trace = "phones.csv"\nspeed = 1.0 ')
    (tmp_path / "exp.toml").write_text(text)
    experiment = load_experiment(tmp_path / "exp.toml")
    assert experiment.devices is not None
    assert experiment.devices.trace == str(tmp_path / "phones.csv")
    fleet = experiment.devices.fleet(50, seed=0)
    assert fleet.profile(49).speed == 1.0
    with pytest.raises(ExperimentError, match=r"has no profile for clients \[50, 51"):
        experiment.devices.fleet(60, seed=0)


FEDBUFF = EXAMPLE.parent / "digits-fedbuff.toml"


def test_the_fedbuff_example_runs_asynchronously_on_the_virtual_clock(tmp_path: Path) -> None:
    experiment = load_experiment(FEDBUFF)
    assert experiment.run.buffered == BufferedSpec(buffer_size=5, max_staleness=10)
    assert Experiment.from_toml(experiment.to_toml()) == experiment
    with RunStore.open(tmp_path / "runs.db") as store:
        outcome = run_experiment(experiment, store)
        rounds = store.rounds(outcome.run_id)
        assert store.latest_checkpoint(outcome.run_id) is not None
        with pytest.raises(StoreError, match="cannot be resumed"):
            run_experiment(experiment, store, resume=outcome.run_id)
    assert len(rounds) == 100
    assert all(len(r.accepted) == 5 for r in rounds)
    clocks = [r.metrics["sim_clock"] for r in rounds]
    assert clocks == sorted(clocks)
    # Slow devices finish after the server has moved on: some updates are stale.
    assert max(r.metrics["staleness_max"] for r in rounds) >= 1
    assert outcome.history.last("test_accuracy") > 0.8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("buffer_size = 5", "buffer_size = 25"), r"run.buffered.buffer_size': can never fill"),
        (("cohort = 20 ", "cohort = 0.5 "), r"'run.cohort': with \[run.buffered\], cohort is"),
        (('name = "fedavg"', 'name = "scaffold"'), r"'run.buffered': scaffold keeps"),
        (("seconds_per_example = 0.01", "deadline = 1.0"), r"'devices.deadline': applies to"),
        (('staleness = "sqrt" ', 'staleness = "linear" '), r"'run.buffered.staleness': must be"),
    ],
)
def test_fedbuff_settings_are_checked_before_anything_runs(
    change: tuple[str, str], message: str
) -> None:
    text = FEDBUFF.read_text()
    assert change[0] in text
    with pytest.raises(ExperimentError, match=message):
        Experiment.from_toml(text.replace(*change), source="x.toml")


def test_a_fedbuff_run_stops_on_request_after_the_current_step(tmp_path: Path) -> None:
    experiment = load_experiment(FEDBUFF)
    with RunStore.open(tmp_path / "runs.db") as store:

        def ask_to_stop(record: RoundRecord, state: ServerState) -> None:
            if record.round == 2:
                (run,) = store.runs()
                store.request_stop(run.id, origin="test")

        outcome = run_experiment(experiment, store, on_round=ask_to_stop)
        # Asked during step 2's callback, seen when step 3 is recorded: it is the last one.
        assert len(store.rounds(outcome.run_id)) == 4
        assert store.latest_checkpoint(outcome.run_id) is not None
        assert store.run(outcome.run_id).status == "interrupted"
    assert outcome.history.stopped.startswith("stopped on request (test")
