"""The ``fedloom`` command end to end, in real subprocesses, against a real SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cli_helpers import experiment_text, fedloom

from fedloom.store import RunStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png_opens(path: Path) -> None:
    from PIL import Image  # matplotlib's own dependency

    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.load()  # decodes every pixel; a truncated file raises here
        width, height = image.size
    assert width > 600
    assert height > 200


def test_run_records_every_round_and_the_commands_read_it_back(workdir: Path) -> None:
    (workdir / "a.toml").write_text(experiment_text(name="alpha", algorithm="fedavg"))
    (workdir / "b.toml").write_text(experiment_text(name="beta", algorithm="fedprox"))
    # fedprox needs mu: an invalid file must fail validation before anything runs.
    bad = fedloom("run", "a.toml", "b.toml", cwd=workdir, check=False)
    assert bad.returncode == 2
    assert "mu" in bad.stderr
    assert bad.stderr.count("\n") == 1
    assert not (workdir / "runs" / "fedloom.db").exists()

    (workdir / "b.toml").write_text(
        experiment_text(name="beta", algorithm="fedprox").replace(
            'name = "fedprox"', 'name = "fedprox"\nmu = 0.01'
        )
    )
    out = fedloom("run", "a.toml", "b.toml", "--plot", "cmp.png", cwd=workdir)
    assert "alpha" in out.stdout
    assert "comparison" in out.stdout
    assert_png_opens(workdir / "cmp.png")

    listed = json.loads(fedloom("runs", "--json", cwd=workdir).stdout)
    assert [r["name"] for r in listed] == ["beta", "alpha"]
    assert all(r["status"] == "completed" and r["rounds"] == 4 for r in listed)
    alpha = listed[1]["run"]

    with RunStore.open(workdir / "runs" / "fedloom.db") as store:
        rounds = store.rounds(alpha)
        info = store.run(alpha)
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    assert all(len(r.cohort) == 10 for r in rounds)
    assert all(r.metrics["bytes_up"] == 10 * 650 * 4 for r in rounds)
    assert 'name = "fedavg"' in info.config
    assert info.seed == 3

    # Any prefix the two ids share (at least their date) names both runs.
    other = listed[0]["run"]
    shared = alpha[: next(i for i, (a, b) in enumerate(zip(alpha, other, strict=True)) if a != b)]
    assert len(shared) >= 9
    ambiguous = fedloom("show", shared, cwd=workdir, check=False)
    assert ambiguous.returncode == 2
    assert "matches 2 runs" in ambiguous.stderr
    shown = json.loads(fedloom("show", alpha[:-1], "--json", cwd=workdir).stdout)
    assert shown["run"] == alpha
    assert [r["round"] for r in shown["rounds"]] == [0, 1, 2, 3]
    assert shown["rounds"][0]["cohort"] == list(rounds[0].cohort)
    config = fedloom("show", alpha, "--config", cwd=workdir).stdout
    assert config == info.config

    compared = fedloom("compare", alpha, listed[0]["run"], cwd=workdir).stdout
    assert "alpha" in compared
    assert "beta" in compared

    report = fedloom("report", alpha, listed[0]["run"], "--out", "rep", cwd=workdir).stdout
    assert "report.png" in report
    assert_png_opens(workdir / "rep" / "report.png")
    markdown = (workdir / "rep" / "report.md").read_text()
    assert alpha in markdown
    assert listed[0]["run"] in markdown
    assert "report.png" in markdown


def test_json_mode_prints_one_object_per_round_then_a_summary(workdir: Path) -> None:
    (workdir / "a.toml").write_text(experiment_text(rounds=3))
    lines = fedloom("run", "a.toml", "--json", cwd=workdir).stdout.strip().splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["round"] for o in objects[:3]] == [0, 1, 2]
    assert objects[3]["status"] == "completed"
    assert objects[3]["rounds"] == 3
    assert "test_accuracy" in objects[3]["metrics"]


def test_log_output_has_no_progress_bar_redraws(workdir: Path) -> None:
    (workdir / "a.toml").write_text(experiment_text(rounds=3))
    out = fedloom("run", "a.toml", cwd=workdir).stdout
    assert "\r" not in out
    assert "\x1b[" not in out
    assert out.count("round ") >= 3
    quiet = fedloom("run", "a.toml", "--quiet", cwd=workdir).stdout.split()
    assert len(quiet) == 1


def test_validate_checks_without_training(workdir: Path) -> None:
    (workdir / "a.toml").write_text(experiment_text())
    assert "ok" in fedloom("validate", "a.toml", cwd=workdir).stdout
    (workdir / "typo.toml").write_text(experiment_text().replace("rounds = 4", "rouns = 4"))
    result = fedloom("validate", "typo.toml", cwd=workdir, check=False)
    assert result.returncode == 2
    assert "typo.toml" in result.stderr
    assert "rouns" in result.stderr
    assert "rounds" in result.stderr  # the suggestion
    assert not (workdir / "runs").exists()


def test_bad_input_gives_one_error_line_and_leaves_the_store_intact(workdir: Path) -> None:
    (workdir / "a.toml").write_text(experiment_text(rounds=2))
    fedloom("run", "a.toml", cwd=workdir)
    db = workdir / "runs" / "fedloom.db"
    before = db.read_bytes()

    (workdir / "broken.toml").write_text("name = \n[data")
    result = fedloom("run", "broken.toml", cwd=workdir, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "broken.toml" in result.stderr

    missing = fedloom("run", "nope.toml", cwd=workdir, check=False)
    assert missing.returncode == 2
    assert "nope.toml" in missing.stderr

    csv_text = experiment_text().replace(
        'dataset = "digits"', 'dataset = "csv"\npath = "gone.csv"\ntarget = "y"'
    )
    (workdir / "csv.toml").write_text(csv_text)
    gone = fedloom("run", "csv.toml", cwd=workdir, check=False)
    assert gone.returncode == 2
    assert "gone.csv" in gone.stderr

    (workdir / "blocked").write_text("a file where the runs directory should be")
    blocked = fedloom("run", "a.toml", "--runs", "blocked", cwd=workdir, check=False)
    assert blocked.returncode == 2
    assert "blocked" in blocked.stderr

    assert db.read_bytes() == before
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


def test_a_store_from_a_newer_schema_is_refused_untouched(workdir: Path) -> None:
    (workdir / "a.toml").write_text(experiment_text(rounds=1))
    fedloom("run", "a.toml", cwd=workdir)
    db = workdir / "runs" / "fedloom.db"
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = db.read_bytes()
    result = fedloom("run", "a.toml", cwd=workdir, check=False)
    assert result.returncode == 2
    assert "99" in result.stderr
    assert result.stderr.count("\n") == 1
    assert db.read_bytes() == before
