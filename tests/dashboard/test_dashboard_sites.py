"""A deployed run's sites in the API: client indices named by the identities the store recorded
(`RunStore.record_sites`); a simulated run has none."""

from __future__ import annotations

from pathlib import Path

from dashboard_helpers import EVIL, add_run, get_json, record

from fedloom.dashboard import DashboardConfig, running
from fedloom.engine.history import Rejection
from fedloom.store import RunStore


def test_a_deployed_run_names_its_clients_and_a_simulated_one_does_not(store_path: Path) -> None:
    names = ["hospital-a", EVIL, "clinic-c"]
    late = Rejection(2, "straggler: would take 3.00s, past the 1.00s deadline")
    bad = Rejection(1, "update has non-finite values")
    with RunStore.open(store_path) as store:
        rounds = [record(0, accuracy=0.5, loss=1.0, cohort=(0, 1, 2), rejected=(late, bad))]
        deployed = add_run(store, "deployed", rounds)
        store.record_sites(deployed, names)
        simulated = add_run(store, "simulated", rounds)
    with running(DashboardConfig(store=store_path, port=0)) as url:
        _, detail = get_json(url + f"api/runs/{deployed}")
        _, body = get_json(url + f"api/runs/{deployed}/rounds")
        _, plain = get_json(url + f"api/runs/{simulated}")
        _, plain_rounds = get_json(url + f"api/runs/{simulated}/rounds")
    assert detail["sites"] == names
    (one,) = body["rounds"]
    assert (one["accepted"], one["accepted_sites"]) == ([0], ["hospital-a"])
    assert one["straggled"] == [{"client": 2, "site": "clinic-c", "reason": late.reason}]
    assert one["rejected"] == [{"client": 1, "site": EVIL, "reason": bad.reason}]
    assert plain["sites"] is None
    (two,) = plain_rounds["rounds"]
    assert (two["accepted"], two["accepted_sites"]) == ([0], None)
    assert two["rejected"] == [{"client": 1, "site": None, "reason": bad.reason}]
