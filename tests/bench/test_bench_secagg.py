"""``bench/secagg.py`` on seconds-long sizes: it measures, checks its sums and writes a table."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

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
