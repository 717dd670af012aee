"""Run one system in a fresh process and measure it from outside: wall time and peak memory.

Memory is sampled every ``interval`` seconds over the whole process tree (the runner and every
descendant, which for Flower includes Ray's GCS server, raylet and worker processes): each
sample sums the members' resident set sizes (RSS) and their proportional set sizes (PSS, which
splits pages shared between processes, such as the PyTorch library every Ray worker maps, among
them). The peak is the largest sum seen, i.e. memory in use at one moment. Sampling misses
spikes shorter than the interval.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

MB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    """What the driver saw of one run. ``killed`` says why the driver stopped it, if it did."""

    returncode: int
    killed: str | None
    wall_seconds: float
    peak_rss_mb: float
    peak_pss_mb: float
    peak_processes: int
    leftover_processes: int


def run_measured(
    command: Sequence[str],
    *,
    env: dict[str, str],
    timeout: float,
    log_path: Path,
    memory_limit_mb: float,
    interval: float = 0.2,
) -> Measurement:
    """Run ``command`` with output to ``log_path``; kill its tree after ``timeout`` seconds or
    once its RSS sum passes ``memory_limit_mb``, before it can take the machine's memory."""
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    tree = ProcessTree(process.pid)
    killed = None
    try:
        while True:
            rss = tree.sample()
            if rss > memory_limit_mb * MB:
                killed = f"killed at the {memory_limit_mb:,.0f} MB memory limit"
            elif time.perf_counter() - started > timeout:
                killed = f"killed at the {timeout:.0f} s time limit"
            if killed:
                tree.kill()
                process.wait()
                break
            try:
                process.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                pass
    except BaseException:  # interrupted: take the tree down with the driver
        tree.kill()
        raise
    wall = time.perf_counter() - started
    return Measurement(
        returncode=process.returncode,
        killed=killed,
        wall_seconds=wall,
        peak_rss_mb=tree.peak_rss / MB,
        peak_pss_mb=tree.peak_pss / MB,
        peak_processes=tree.peak_processes,
        leftover_processes=tree.kill(),
    )


class ProcessTree:
    """A process and its descendants, including those that outlive their parent."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.members: dict[int, psutil.Process] = {pid: self.root}
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0

    def _refresh(self) -> list[psutil.Process]:
        for member in list(self.members.values()):
            try:
                for child in member.children(recursive=True):
                    self.members.setdefault(child.pid, child)
            except psutil.Error:
                pass
        return [p for p in self.members.values() if _alive(p)]

    def sample(self) -> int:
        """Add one sample of the tree's memory to the peaks; return its RSS sum in bytes."""
        rss = pss = 0
        alive = self._refresh()
        for member in alive:
            try:
                info = member.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_processes = max(self.peak_processes, len(alive))
        return rss

    def kill(self) -> int:
        """SIGKILL every member still alive (each one this tree started); return how many."""
        alive = self._refresh()
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            os.killpg(self.root.pid, signal.SIGKILL)
        for member in alive:
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                member.kill()
        psutil.wait_procs(alive, timeout=5)
        return sum(1 for p in alive if p.pid != self.root.pid)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
