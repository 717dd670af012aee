"""``bench/secagg.py`` on seconds-long sizes: it measures, checks its sums and writes a table."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

import fedloom as fl
from fedloom.executors import InProcessExecutor

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_secure_aggregation_benchmark_runs_quickly(tmp_path: Path) -> None:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    secagg = importlib.import_module("secagg")
    out = tmp_path / "secagg.md"
    assert secagg.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "python bench/secagg.py --quick" in text
    rows = [line for line in text.splitlines() if line.startswith("| 10 | 1,000 |")]
    assert len(rows) == 2
    assert all(row.endswith("| yes |") for row in rows)


def load_secagg():  # type: ignore[no-untyped-def]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("secagg")


def test_the_benchmarks_dropouts_vanish_after_sharing_keys_and_the_mean_is_the_survivors() -> None:
    """The engine comparison's clients do not train; its dropped clients leave the secure round
    at masked-input collection (their masks must be recovered), and the new model is the plain
    mean of the survivors' fixed vectors, within quantization."""
    secagg = load_secagg()
    plain, data = secagg.no_training(10, 1_000)
    secure = plain.with_stages(fl.secure_sum(clip=10.0))
    executor = secagg.DropsAfterSharing(InProcessExecutor(secure.client, data.clients), range(3))
    start = np.zeros(1_000, dtype=np.float32)
    run = {"rounds": 1, "cohort": 10, "federated_eval": False, "params": start}
    history = fl.simulate(secure, data, executor=executor, **run)
    record = history.records[0]
    assert record.aborted is None
    assert record.accepted == tuple(range(3, 10))
    assert record.metrics["secagg.dropped.mask"] == 3
    assert record.metrics["secagg.dropped.share"] == 0
    fixed = [np.random.default_rng(c).uniform(-0.01, 0.01, 1_000) for c in range(3, 10)]
    np.testing.assert_allclose(history.params, np.mean(fixed, axis=0), atol=1e-5)
    executor = secagg.DropsAfterSharing(InProcessExecutor(plain.client, data.clients), range(3))
    record = fl.simulate(plain, data, executor=executor, **run).records[0]
    assert record.accepted == tuple(range(3, 10))


def test_the_flower_comparison_says_why_it_did_not_run(tmp_path: Path) -> None:
    secagg = load_secagg()
    missing = tmp_path / "no-flower" / "python"
    reason = secagg.flower_rounds(missing, 10, 1_000, 1, secure=True, timeout=5)
    assert reason == f"not run: no Flower environment at {missing}"
