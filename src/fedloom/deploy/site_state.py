"""A site's client state on its own disk, so that a restarted site goes on where it stopped.

What a client keeps between the rounds it joins (SCAFFOLD's control variate, the error-feedback
residual of a biased codec: :data:`~fedloom.core.messages.ClientState`) lives in the site's
process. :class:`SiteStateFile` writes it after every training task the site completes, to one
``.npz`` archive that also holds a JSON header (the run, the round, and a fingerprint of the
run's training configuration and the model's layout), and reads it back when the site joins
again. The write is atomic (a temporary file in the same directory, flushed to disk, then
:func:`os.replace`), so a site killed at any moment leaves either the previous file or the new
one. The archive is read with ``allow_pickle=False``: nothing in it can run code.

A file from another run, from a different training configuration or model, or one that cannot
be read is never used: the site logs why and starts afresh, as a new client would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import ClientState
from fedloom.transport.config import TrainingConfig

log = logging.getLogger("fedloom.site")

FORMAT = "fedloom-site-state/1"
_HEADER = "header"
_PREFIX = "state."


def fingerprint(config: TrainingConfig, layout: Layout) -> str:
    """A SHA-256 of the run's training configuration (algorithm, options, stages, loss, privacy)
    and the model's layout: a state kept under another one would not mean the same thing."""
    described = {
        "config": {
            "algorithm": config.algorithm,
            "train": dict(sorted(config.train.items())),
            "algorithm_options": dict(sorted(config.algorithm_options.items())),
            "stages": [{"kind": s.kind, "options": dict(sorted(s.options.items()))}
                       for s in config.stages],
            "loss": config.loss,
            "privacy": None if config.privacy is None else asdict(config.privacy),
        },
        "layout": [asdict(f) for f in layout.fields],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SavedState:
    """A state read back: the vectors, and the round whose training produced them."""

    state: ClientState
    round: int


@dataclass(frozen=True)
class SiteStateFile:
    """The site ``site``'s state file, ``directory/<site>.state.npz``."""

    directory: Path
    site: str

    @property
    def path(self) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.site)
        return self.directory / f"{safe}.state.npz"

    def save(self, state: ClientState, *, run: str, round: int, fingerprint: str) -> None:
        """Replace the file, atomically, with ``state`` after training round ``round``."""
        header = {
            "format": FORMAT, "site": self.site, "run": run, "round": round,
            "fingerprint": fingerprint,
        }  # fmt: skip
        arrays = {_PREFIX + k: np.ascontiguousarray(v) for k, v in state.items()}
        arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.directory
        )
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)  # type: ignore[arg-type]
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load(self, *, run: str, fingerprint: str, size: int) -> SavedState | None:
        """The state saved for ``run`` under ``fingerprint``, or None (logged with the reason)
        when there is none, it belongs to another run or configuration, or it cannot be read.
        Every vector must be a finite 1-D float32 array of at most ``size`` entries."""
        if not self.path.exists():
            return None
        try:
            saved = self._read(size)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            log.warning(
                "%s: ignoring the state file %s, which cannot be used (%s); starting afresh",
                self.site, self.path, error,
            )  # fmt: skip
            return None
        header, state = saved
        if header.get("format") != FORMAT or header.get("site") != self.site:
            reason = (
                f"it is for site {header.get('site')!r} in format {header.get('format')!r}, "
                f"not {self.site!r} in {FORMAT!r}"
            )
        elif header.get("run") != run:
            reason = f"it is from run {header.get('run')!r}, and this run is {run!r}"
        elif header.get("fingerprint") != fingerprint:
            reason = (
                "it was kept under another training configuration or model layout "
                f"(fingerprint {str(header.get('fingerprint'))[:12]}…, this run's "
                f"{fingerprint[:12]}…)"
            )
        else:
            round_ = header.get("round")
            if not isinstance(round_, int) or round_ < 0:
                reason = f"its round {round_!r} is not a round number"
            else:
                log.info(
                    "%s: restored the client state of run %s after round %d from %s (%s)",
                    self.site, run, round_, self.path, ", ".join(sorted(state)) or "empty",
                )  # fmt: skip
                return SavedState(state, round_)
        log.warning(
            "%s: ignoring the state file %s: %s; starting afresh", self.site, self.path, reason
        )
        return None

    def _read(self, size: int) -> tuple[Mapping[str, object], dict[str, Vector]]:
        with np.load(self.path, allow_pickle=False) as archive:
            if _HEADER not in archive.files:
                raise ValueError("it has no header")
            raw = archive[_HEADER]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ValueError("its header is not JSON text")
            header = json.loads(raw.tobytes().decode())
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
            state: dict[str, Vector] = {}
            for name in archive.files:
                if name == _HEADER:
                    continue
                if not name.startswith(_PREFIX):
                    raise ValueError(f"it holds an unexpected array {name!r}")
                vector = archive[name]
                if vector.dtype != np.float32 or vector.ndim != 1 or len(vector) > size:
                    raise ValueError(
                        f"{name!r} is a {vector.dtype} array of shape {vector.shape}; expected "
                        f"a float32 vector of at most {size} entries"
                    )
                if not np.all(np.isfinite(vector)):
                    raise ValueError(f"{name!r} has values that are not finite")
                state[name[len(_PREFIX) :]] = vector
        return header, state
