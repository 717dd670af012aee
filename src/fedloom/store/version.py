"""Which code produced a run: fedloom's version, and its git commit when run from a checkout."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

_GIT_TIMEOUT_S = 5.0


def code_version() -> str:
    """fedloom's installed version, plus ``+<commit>`` when fedloom runs from a git checkout,
    plus ``.dirty`` when tracked files there have uncommitted changes: ``0.1.0+9d235f5.dirty``."""
    try:
        version = metadata.version("fedloom")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        version = "0+unknown"
    described = git_describe(Path(__file__).resolve().parent.parent)
    return f"{version}+{described}" if described else version


def git_describe(directory: Path) -> str:
    """``<short commit>`` or ``<short commit>.dirty`` for the git checkout that tracks
    ``directory``; ``""`` when there is none, git is missing, or git is too slow.

    ``directory`` must hold a tracked file, so a package installed into a virtual environment
    that happens to sit inside some other repository is not credited with that repository's
    commit. Untracked files (run outputs, say) do not make a checkout dirty.
    """
    commit = _git(directory, "rev-parse", "--short", "HEAD")
    if not commit or not _git(directory, "ls-files", "--", "."):
        return ""
    changes = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return f"{commit}.dirty" if changes else commit


def _git(directory: Path, *args: str) -> str:
    """git's stripped output, or ``""`` if it fails in any way."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
