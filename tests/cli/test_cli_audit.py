"""``fedloom audit verify`` and ``fedloom audit report`` on a real run, through the real command."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import experiment_text, fedloom

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("audit")
    (workdir / "exp.toml").write_text(experiment_text(rounds=3))
    run_id = fedloom("run", "exp.toml", "--quiet", cwd=workdir).stdout.strip()
    return workdir, run_id


def copy_of(workdir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs"
    target.mkdir()
    source = sqlite3.connect(workdir / "runs" / "fedloom.db")
    dest = sqlite3.connect(target / "fedloom.db")
    source.backup(dest)
    source.close()
    dest.close()
    return tmp_path


def test_verify_passes_on_an_intact_run(finished_run: tuple[Path, str]) -> None:
    workdir, run_id = finished_run
    out = fedloom("audit", "verify", run_id, cwd=workdir).stdout
    assert re.match(rf"run {run_id}: audit trail intact, \d+ entries, head [0-9a-f]{{64}}$",
                    out.strip())  # fmt: skip


def test_verify_names_the_deleted_row(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    workdir = copy_of(finished_run[0], tmp_path)
    conn = sqlite3.connect(workdir / "runs" / "fedloom.db", isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_delete")
    seq = conn.execute("SELECT MIN(seq) FROM audit WHERE kind = 'model'").fetchone()[0]
    conn.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    conn.close()
    result = fedloom("audit", "verify", finished_run[1], cwd=workdir, check=False)
    assert result.returncode == 1
    assert f"FAILED at entry {seq}: removed: entry {seq} is missing" in result.stderr


def test_verify_names_the_edited_row(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    workdir = copy_of(finished_run[0], tmp_path)
    conn = sqlite3.connect(workdir / "runs" / "fedloom.db", isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET payload = replace(payload, 'client-', 'kleint-') "
                 "WHERE seq = 3")  # fmt: skip
    conn.close()
    result = fedloom("audit", "verify", finished_run[1], cwd=workdir, check=False)
    assert result.returncode == 1
    assert "FAILED at entry 3 " in result.stderr
    assert "altered" in result.stderr


def test_report_is_a_readable_summary(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    workdir, run_id = finished_run
    out = tmp_path / "summary.md"
    fedloom("audit", "report", run_id, "--out", out, cwd=workdir)
    text = out.read_text()
    for heading in ("Audit trail", "Parties", "What left each site", "Policies in force",
                    "Refusals", "Model provenance"):  # fmt: skip
        assert f"## {heading}" in text
    assert "**Verified.**" in text
    assert "| client-" in text
    assert "no training examples or labels left any site" in text
