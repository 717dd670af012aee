"""The live-state provider and the dashboard's configuration checks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from dashboard_helpers import get_json

from fedloom.dashboard import (
    DashboardConfig,
    InProcessLiveState,
    LiveState,
    RoundProgress,
    SiteStatus,
    running,
)


def site(site_id: str, identity: str = "CN=hospital-a") -> SiteStatus:
    return SiteStatus(site_id=site_id, identity=identity, address="10.0.0.1:4000",
                      connected_since=100.0)  # fmt: skip


def test_in_process_state_tracks_sites_heartbeats_and_the_round() -> None:
    live = InProcessLiveState()
    assert isinstance(live, LiveState)
    live.connect(site("b", "CN=b"))
    live.connect(site("a", "CN=a"))
    live.heartbeat("a", at=130.5, state="training")
    assert [(s.site_id, s.last_heartbeat, s.state) for s in live.sites()] == [
        ("a", 130.5, "training"), ("b", None, "connected"),
    ]  # fmt: skip
    live.disconnect("b")
    with pytest.raises(KeyError, match="site 'b' is not connected; connected: a"):
        live.heartbeat("b")
    with pytest.raises(ValueError, match="no round is in flight"):
        live.update_received()
    live.start_round(4, expected=2, run_id="r1", at=200.0)
    live.update_received()
    assert live.progress() == RoundProgress("r1", 4, 2, 1, 200.0)
    live.update_received()
    with pytest.raises(ValueError, match=r"received must be at most expected \(2\), got 3"):
        live.update_received()
    live.end_round()
    assert live.progress() is None


def test_concurrent_updates_are_all_counted() -> None:
    live = InProcessLiveState()
    live.start_round(0, expected=800)
    threads = [threading.Thread(target=lambda: [live.update_received() for _ in range(100)])
               for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    progress = live.progress()
    assert progress is not None
    assert progress.received == 800


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"site_id": ""}, "site_id must be a non-empty str"),
        ({"identity": 7}, "identity must be a str"),
        ({"connected_since": float("nan")}, "connected_since must be a finite number"),
    ],
)
def test_site_status_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"site_id": "a", "identity": "CN=a", "address": "x",
                                 "connected_since": 1.0} | kwargs  # fmt: skip
    with pytest.raises((TypeError, ValueError), match=message):
        SiteStatus(**values)  # type: ignore[arg-type]


def test_the_api_reports_live_state_or_its_absence(store_path: Path) -> None:
    live = InProcessLiveState()
    live.connect(site("s1"))
    live.start_round(2, expected=3, run_id="r", at=50.0)
    with running(DashboardConfig(store=store_path, port=0), live=live) as url:
        status, body = get_json(url + "api/live")
        assert get_json(url + "api/live?x=1")[0] == 400
    assert status == 200
    assert body["available"] is True
    assert [s["identity"] for s in body["sites"]] == ["CN=hospital-a"]
    assert body["progress"] == {"run_id": "r", "round": 2, "expected": 3, "received": 0,
                                "started": 50.0, "phase": "train", "sent": None,
                                "failed": 0}  # fmt: skip
    with running(DashboardConfig(store=store_path, port=0)) as url:
        _, body = get_json(url + "api/live")
    assert body["available"] is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "0.0.0.0"}, "needs an access token"),
        ({"host": "192.168.1.5", "token": "short"}, "at least 16 characters"),
        ({"token": "has a space in it, sixteen+"}, "no whitespace"),
        ({"port": 70000}, r"port must be an integer in \[0, 65535\]"),
        ({"poll_seconds": 0.0}, "poll_seconds must be in"),
    ],
)
def test_config_refuses_unsafe_or_bad_settings(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DashboardConfig(store=tmp_path / "s.db", **kwargs)  # type: ignore[arg-type]


def test_loopback_needs_no_token(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert DashboardConfig(store=tmp_path / "s.db", host=host).loopback
    assert not DashboardConfig(store=tmp_path / "s.db", host="0.0.0.0", token="x" * 16).loopback
