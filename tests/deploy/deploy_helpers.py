"""Real processes on 127.0.0.1 for the deployment tests: a federation, a server, sites."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedloom.experiment import Experiment, build
from fedloom.pki import Federation, init_ca, issue

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"

EXPERIMENT = """
name = "{name}"

[data]
dataset = "digits"
clients = {clients}
test_fraction = 0.2
holdout = 0.2

[data.partition]
kind = "dirichlet"
alpha = 0.5

[model]
kind = "softmax"

[train]
lr = 0.3
epochs = 1
batch_size = 16

[algorithm]
name = "{algorithm}"

[run]
rounds = {rounds}
cohort = {cohort}
seed = 5
min_cohort = {min_cohort}
federated_eval = {federated_eval}
"""


def experiment_text(
    *,
    name: str = "deployed",
    clients: int = 3,
    rounds: int = 2,
    cohort: int = 3,
    algorithm: str = "fedavg",
    min_cohort: int = 1,
    federated_eval: bool = True,
) -> str:
    return EXPERIMENT.format(
        name=name,
        clients=clients,
        rounds=rounds,
        cohort=cohort,
        algorithm=algorithm,
        min_cohort=min_cohort,
        federated_eval=str(federated_eval).lower(),
    )


def federation(root: Path, sites: Sequence[str]) -> Federation:
    fed = init_ca(root)
    issue(root, "server", server=True)
    for site in sites:
        issue(root, site)
    return fed


def write_site_data(experiment: Experiment, directory: Path) -> list[Path]:
    """Each simulated client's split, as the file a site would hold."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for client in build(experiment).data.clients:
        path = directory / f"client-{client.client_id}.npz"
        np.savez(
            path,
            x_train=client.x_train,
            y_train=client.y_train,
            x_test=client.x_test,
            y_test=client.y_test,
        )
        paths.append(path)
    return paths


def environment(cwd: Path) -> dict[str, str]:
    path = os.pathsep.join([str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "FEDLOOM_RUNS": str(cwd / "runs"),
    }


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    run_id: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def start_server(
    cwd: Path, experiment: Path, fed: Federation, *args: str, timeout: float = 60
) -> Server:
    log = cwd / f"server-{time.monotonic_ns()}.log"
    out = log.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedloom",
            "server",
            str(experiment),
            "--dir",
            str(fed.root),
            "--listen",
            "127.0.0.1:0",
            "--verbose",
            *args,
        ],
        cwd=cwd,
        env=environment(cwd),
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"listening on [\d.]+:(\d+) for run (\S+)", log.read_text())
        if found:
            return Server(process, int(found.group(1)), found.group(2), log)
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{log.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server did not start:\n{log.read_text()}")


def start_site(
    cwd: Path,
    port: int,
    fed: Federation,
    site: str,
    data: Path,
    *args: str,
    model: str = "site_models:digits_softmax",
    cert: Path | None = None,
    launcher: Sequence[str] = ("-m", "fedloom"),
) -> subprocess.Popen[str]:
    """``launcher`` runs the ``fedloom`` command (a script that wraps it, say)."""
    log = (cwd / f"site-{site}-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(
        [
            sys.executable,
            *launcher,
            "client",
            "--server",
            f"127.0.0.1:{port}",
            "--identity",
            str(cert or fed.cert(site)),
            "--key",
            str(fed.key(site)),
            "--ca",
            str(fed.ca_cert),
            "--data",
            str(data),
            "--model",
            model,
            "--backoff-max",
            "1",
            "--verbose",
            *args,
        ],
        cwd=cwd,
        env=environment(cwd),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_relay(
    cwd: Path, port: int, fed: Federation, name: str, listen: int, region: Path, *args: str
) -> subprocess.Popen[str]:
    log = (cwd / f"relay-{name}-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedloom",
            "relay",
            "--server",
            f"127.0.0.1:{port}",
            "--identity",
            str(fed.cert(name)),
            "--key",
            str(fed.key(name)),
            "--ca",
            str(fed.ca_cert),
            "--model",
            "site_models:digits_softmax",
            "--dir",
            str(fed.root),
            "--listen",
            f"127.0.0.1:{listen}",
            "--allowlist",
            str(region),
            "--verbose",
            *args,
        ],
        cwd=cwd,
        env=environment(cwd),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
