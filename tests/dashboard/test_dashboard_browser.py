"""End-to-end: the pages in headless Chromium (Debian's chromium, driven by Selenium through
Debian's chromedriver; Selenium Manager never runs because both paths are given)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import EVIL, TOKEN, add_run, experiment_text, record

from fedloom.dashboard import (
    DashboardConfig,
    InProcessLiveState,
    RoundProgress,
    SiteStatus,
    running,
)
from fedloom.engine.history import Rejection
from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        f"browser tests need Debian's chromium at {CHROMIUM} and {CHROMEDRIVER} "
        "(apt-get install chromium chromium-driver; .ci/run installs them)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is missing")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

SERIES_RGB = [(31, 119, 180), (214, 39, 40)]  # the first two series' colours in common.js
COUNT_SERIES_PIXELS = """
const canvas = document.querySelector(arguments[0] + ' canvas');
if (!canvas) return -1;
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 200 && arguments[1].some(([r, g, b]) => Math.abs(data[i] - r) < 25
      && Math.abs(data[i + 1] - g) < 25 && Math.abs(data[i + 2] - b) < 25)) n++;
}
return n;
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    return WebDriverWait(browser, 30, poll_frequency=0.05).until(condition, message=what)


def cells(browser: Any, round_: int) -> dict[str, str]:
    """The round's row as shown, read in one script call (the page may redraw between calls)."""
    script = """
    const row = document.querySelector(`#rounds tr[data-round="${arguments[0]}"]`);
    return Object.fromEntries([...row.querySelectorAll("td[data-col]")]
      .map((td) => [td.dataset.col, td.textContent]));
    """
    cells: dict[str, str] = browser.execute_script(script, round_)
    return cells


def shown(value: float) -> str:
    return f"{value:.4f}"


def test_a_finished_run_shows_the_store_numbers_and_draws_its_charts(
    browser: Any, tmp_path: Path, store_path: Path
) -> None:
    experiment = Experiment.from_toml(experiment_text(rounds=3), source="test")
    with RunStore.open(store_path) as store:
        run_id = run_experiment(experiment, store).run_id
        other = add_run(store, "other", [record(0, accuracy=0.5, loss=1.0)])
        stored = store.rounds(run_id)
    with running(DashboardConfig(store=store_path, port=0)) as url:
        browser.get(url + f"runs/{run_id}")
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-rounds") == "3", "three rounds shown")  # fmt: skip
        assert browser.find_element(By.ID, "run-status").text == "completed"
        for r in stored:
            got = cells(browser, r.round)
            assert got["accepted"] == f"{len(r.accepted)}/{len(r.cohort)}"
            for name in ("test_accuracy", "test_loss", "train_loss"):
                assert got[name] == shown(r.metrics[name])
            assert got["bytes_up"] == str(round(r.metrics["bytes_up"]))
            assert got["bytes_down"] == str(round(r.metrics["bytes_down"]))
        for chart in ("#chart-accuracy", "#chart-loss", "#chart-bytes"):
            assert browser.execute_script(COUNT_SERIES_PIXELS, chart, SERIES_RGB) > 50, chart

        browser.get(url + f"compare?runs={run_id},{other}")
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-loaded") == "true", "comparison shown")  # fmt: skip
        legend = browser.find_element(By.CSS_SELECTOR, "#chart-compare .u-legend").text
        assert run_id in legend
        assert other in legend
        assert browser.execute_script(COUNT_SERIES_PIXELS, "#chart-compare", SERIES_RGB) > 50


def test_a_run_in_progress_updates_as_rounds_are_recorded(browser: Any, store_path: Path) -> None:
    with RunStore.open(store_path) as store:
        run_id = add_run(
            store, "live", [record(0, accuracy=0.4, loss=1.2), record(1, accuracy=0.6, loss=0.9)],
            status=None,
        )  # fmt: skip
        with running(DashboardConfig(store=store_path, port=0, poll_seconds=0.2)) as url:
            browser.get(url + f"runs/{run_id}")
            body = browser.find_element(By.TAG_NAME, "body")
            wait_for(browser, lambda _: body.get_attribute("data-rounds") == "2", "two rounds")
            assert browser.find_element(By.ID, "run-status").text == "running"
            straggler = Rejection(3, "straggler: would take 2.00s, past the 1.00s deadline")
            store.record_round(run_id, record(2, accuracy=0.8125, loss=0.5, rejected=(straggler,)))
            wait_for(browser, lambda _: body.get_attribute("data-rounds") == "3", "a new round")
            got = cells(browser, 2)
            assert got["test_accuracy"] == shown(0.8125)
            assert got["straggled"] == "1"
            assert got["accepted"] == "3/4"
            out = browser.find_element(By.CSS_SELECTOR, '#clients-out tr[data-kind="straggled"]')
            assert straggler.reason in out.text
            store.finish(run_id, status="completed", stopped="done")
            wait_for(
                browser, lambda b: b.find_element(By.ID, "run-status").text == "completed",
                "the finished status",
            )  # fmt: skip


def test_a_malicious_run_and_site_name_are_shown_as_text(browser: Any, store_path: Path) -> None:
    with RunStore.open(store_path) as store:
        evil = Rejection(2, EVIL)
        run_id = add_run(
            store, EVIL, [record(0, accuracy=0.5, loss=1.0, rejected=(evil,))], status=None
        )
    live = InProcessLiveState()
    live.connect(SiteStatus(site_id="site-1", identity=EVIL, address="10.0.0.7:5000",
                            connected_since=1.0e9, state=EVIL))  # fmt: skip
    live.start_round(0, expected=3, run_id=run_id)
    live.update_received()
    config = DashboardConfig(store=store_path, port=0, poll_seconds=60)  # no redraw mid-test
    with running(config, live=live) as url:
        browser.get(url)
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-loaded") == "true", "the runs list")  # fmt: skip
        assert browser.find_element(By.CSS_SELECTOR, f'tr[data-run="{run_id}"] .run-name').text \
            == EVIL  # fmt: skip
        assert browser.find_element(By.CSS_SELECTOR, ".site-identity").text == EVIL
        assert "1 of 3 updates received" in browser.find_element(By.ID, "progress").text
        assert browser.title == "Runs · fedloom"
        assert browser.find_elements(By.CSS_SELECTOR, "img, main script") == []
        browser.get(url + f"runs/{run_id}")
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-rounds") == "1", "the run")  # fmt: skip
        assert browser.find_element(By.ID, "run-name").text == EVIL
        assert EVIL in browser.find_element(By.ID, "clients-out").text
        assert browser.title == EVIL + " · fedloom"  # set as text, not run
        assert browser.find_elements(By.CSS_SELECTOR, "img, main script") == []
        browser.get(url + f"compare?runs={run_id}")
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-loaded") == "true", "the comparison")  # fmt: skip
        assert EVIL in browser.find_element(By.CSS_SELECTOR, "#chart-compare .u-legend").text
        assert browser.title == "Compare · fedloom"
        assert browser.find_elements(By.CSS_SELECTOR, "img, main script") == []


def test_the_audit_section_shows_the_verification_and_the_first_bad_entry(
    browser: Any, store_path: Path
) -> None:
    experiment = Experiment.from_toml(experiment_text(rounds=2), source="test")
    with RunStore.open(store_path) as store:
        run_id = run_experiment(experiment, store).run_id
        trail = store.audit(run_id)
        entries, head = trail.entries(), trail.head()[1]
    result = "#audit-result"
    with running(DashboardConfig(store=store_path, port=0)) as url:
        browser.get(url + f"runs/{run_id}")
        wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, result).get_attribute(
            "data-ok") == "true", "the verified trail")  # fmt: skip
        assert browser.find_element(By.CSS_SELECTOR, result).text == (
            f"Verified: all {len(entries)} entries are intact and in order (SHA-256 hash chain)."
        )
        assert browser.find_element(By.ID, "audit-head").text == head
        rows = browser.find_elements(By.CSS_SELECTOR, "#audit-entries tbody tr")
        assert [r.get_attribute("data-seq") for r in rows] == [str(e.seq) for e in entries]

        seq = next(e.seq for e in entries if e.kind == "join")
        conn = sqlite3.connect(store_path, isolation_level=None)
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("UPDATE audit SET payload = ? WHERE seq = ?",
                     (json.dumps({"identity": EVIL, "round": 0}), seq))  # fmt: skip
        conn.close()
        browser.get(url + f"runs/{run_id}")
        wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, result).get_attribute(
            "data-ok") == "false", "the failed verification")  # fmt: skip
        assert browser.find_element(By.CSS_SELECTOR, result).text.startswith(
            f"Verification FAILED at entry {seq} (join): altered: its contents do not match "
            f"its hash. The first {seq} entries check out"
        )
        bad = browser.find_element(By.CSS_SELECTOR, f'#audit-entries tr[data-seq="{seq}"]')
        assert bad.get_attribute("class") == "bad"
        assert bad.find_element(By.CSS_SELECTOR, 'td[data-col="summary"]').text == (
            f"{EVIL} joined in round 0"
        )
        assert browser.title == f"{experiment.name} · fedloom"  # the name shown as text, not run
        assert browser.find_elements(By.CSS_SELECTOR, "img, main script") == []


def test_privacy_and_secure_aggregation_show_when_a_run_reports_them(
    browser: Any, store_path: Path
) -> None:
    def dp(epsilon: float, **extra: float) -> dict[str, float]:
        return {"dp.epsilon": epsilon, "dp.delta": 1e-5, "secagg.dropouts": 0.0, **extra}

    with RunStore.open(store_path) as store:
        run_id = add_run(store, "private", [
            record(0, accuracy=0.5, loss=1.0, extra=dp(0.5)),
            record(1, accuracy=0.5, loss=1.0, extra=dp(0.75), aborted="too few survivors"),
            record(2, accuracy=0.5, loss=1.0, extra=dp(1.25)),
        ], config="[privacy]\nepsilon_budget = 3.0\n")  # fmt: skip
    with running(DashboardConfig(store=store_path, port=0)) as url:
        browser.get(url + f"runs/{run_id}")
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-rounds") == "3", "the run")  # fmt: skip
        assert browser.find_element(By.ID, "privacy").is_displayed()
        summary = browser.find_element(By.ID, "privacy-summary").text
        assert summary.startswith("ε spent 1.250 of 3.000")
        assert browser.execute_script(COUNT_SERIES_PIXELS, "#chart-privacy", SERIES_RGB) > 50
        assert browser.find_element(By.ID, "secagg-summary").text == "On in 3 round(s); 1 aborted."
        assert browser.find_element(By.ID, "secagg-aborted").text == "round 1: too few survivors"
        assert cells(browser, 1)["aborted"] == "too few survivors"


def test_stopping_from_the_page_needs_the_token(browser: Any, store_path: Path) -> None:
    with RunStore.open(store_path) as store:
        run_id = add_run(store, "stoppable", [record(0, accuracy=0.5, loss=1.0)], status=None)
    with running(DashboardConfig(store=store_path, port=0, token=TOKEN)) as url:
        browser.get(url + f"runs/{run_id}")
        form = wait_for(browser, lambda b: b.find_element(By.ID, "stop").is_displayed()
                        and b.find_element(By.ID, "stop-form"), "the stop form")  # fmt: skip
        result = browser.find_element(By.ID, "stop-result")
        browser.find_element(By.ID, "stop-token").send_keys("not-the-token-at-all")
        form.submit()
        wait_for(browser, lambda _: result.text.startswith("Refused (401)"), "the refusal")
        with RunStore.open_read_only(store_path) as store:
            assert store.stop_request(run_id, since="") is None
        browser.find_element(By.ID, "stop-token").send_keys(TOKEN)
        form.submit()
        wait_for(browser, lambda _: result.text.startswith("Stop requested"), "the request")
        assert TOKEN not in browser.page_source
    with RunStore.open_read_only(store_path) as store:
        assert store.stop_request(run_id, since="") is not None


def test_a_deployed_run_names_its_sites_as_text(browser: Any, store_path: Path) -> None:
    names = ["hospital-a", EVIL, "clinic-c", "lab-d"]
    dropped = Rejection(1, "dropped out during the round")
    with RunStore.open(store_path) as store:
        rounds = [record(0, accuracy=0.5, loss=1.0, rejected=(dropped,))]
        run_id = add_run(store, "deployed", rounds)
        store.record_sites(run_id, names)
    with running(DashboardConfig(store=store_path, port=0)) as url:
        browser.get(url + f"runs/{run_id}")
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-rounds") == "1", "the run")  # fmt: skip
        assert browser.find_element(By.ID, "clients-accepted").text == "hospital-a, clinic-c, lab-d"
        row = browser.find_element(By.CSS_SELECTOR, '#clients-out tr[data-kind="dropped"]')
        assert row.get_attribute("data-client") == "1"
        assert row.find_element(By.TAG_NAME, "td").text == EVIL
        facts = browser.find_element(By.CSS_SELECTOR, '#run-facts dd[data-fact="sites"]')
        assert facts.text == ", ".join(names)
        assert browser.title == "deployed · fedloom"
        assert browser.find_elements(By.CSS_SELECTOR, "img, main script") == []


class FixedLive:
    """A LiveState that always tells the same: a deployed server's evaluation phase."""

    def sites(self) -> list[SiteStatus]:
        return [
            SiteStatus(
                site_id="site-a", identity="CN=site-a", address="ipv4:10.0.0.5:1",
                connected_since=1.0e9, last_heartbeat=1.0e9, state="evaluating",
            )
        ]  # fmt: skip

    def progress(self) -> RoundProgress:
        return RoundProgress("r1", 4, expected=3, received=1, started=1.0e9, phase="evaluate",
                             sent=2, failed=1)  # fmt: skip


def test_a_deployed_servers_round_shows_tasks_sent_and_failed(
    browser: Any, store_path: Path
) -> None:
    RunStore.open(store_path).close()  # an empty store
    with running(DashboardConfig(store=store_path, port=0), live=FixedLive()) as url:
        browser.get(url)
        wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
            "data-loaded") == "true", "the runs list")  # fmt: skip
        assert browser.find_element(By.ID, "progress").text == (
            "Round 4 of run r1: 1 of 3 evaluations received (2 sent, 1 failed)."
        )
        assert browser.find_element(By.CSS_SELECTOR, ".site-identity").text == "CN=site-a"
