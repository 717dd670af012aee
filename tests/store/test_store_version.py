"""code_version names fedloom's version and, in a git checkout, the commit and dirtiness."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import fedloom
from fedloom.store import code_version
from fedloom.store.version import git_describe

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_code_version_starts_with_the_package_version() -> None:
    version = code_version()
    assert version == fedloom.__version__ or version.startswith(f"{fedloom.__version__}+")


@needs_git
def test_git_describe_reports_commit_and_tracked_changes(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "module.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    commit = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert git_describe(package) == commit

    (tmp_path / "runs.db").write_bytes(b"untracked output")
    assert git_describe(package) == commit
    (package / "module.py").write_text("x = 2\n")
    assert git_describe(package) == f"{commit}.dirty"


@needs_git
def test_git_describe_ignores_folders_git_does_not_track(tmp_path: Path) -> None:
    assert git_describe(tmp_path) == ""  # not a checkout at all
    git(tmp_path, "init", "-q")
    (tmp_path / "tracked.txt").write_text("a")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    installed = tmp_path / ".venv" / "site-packages" / "fedloom"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    # A package installed into some other repository's folder is not that repository's code.
    assert git_describe(installed) == ""
