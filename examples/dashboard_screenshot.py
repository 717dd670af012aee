"""Make docs/dashboard.png: the dashboard's page for the demo run, in headless Chromium.

    make screenshot          # or: python examples/dashboard_screenshot.py [--out PATH]

Trains the demo's FedAvg run (examples/digits-fedavg.toml) into a fresh temporary store, serves
the dashboard on 127.0.0.1, opens the run's page in Debian's chromium (driven by Selenium
through /usr/bin/chromedriver) and saves the whole page as a PNG.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from fedloom.dashboard import DashboardConfig, running
from fedloom.experiment import load_experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH = 1280


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--run-file", type=Path, default=ROOT / "examples" / "digits-fedavg.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store_path = Path(folder) / "fedloom.db"
        with RunStore.open(store_path) as store:
            run_id = run_experiment(load_experiment(args.run_file), store).run_id
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     f"--window-size={WIDTH},1000"):  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            with running(DashboardConfig(store=store_path, port=0)) as url:
                driver.get(url + f"runs/{run_id}")
                body = driver.find_element(By.TAG_NAME, "body")
                WebDriverWait(driver, 60).until(lambda _: body.get_attribute("data-loaded"))
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(WIDTH, int(height) + 40)
                WebDriverWait(driver, 60).until(lambda _: body.get_attribute("data-loaded"))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(f"wrote {args.out} (run {run_id})")


if __name__ == "__main__":
    main()
