"""How many malloc arenas the server process uses (glibc only).

glibc gives threads their own arenas (up to eight a core) and keeps the blocks freed in each.
gRPC's threads allocate and free a chunk-sized buffer (1 MiB) for every chunk sent to or read
from a site, on whichever thread runs; with an arena each, every arena ends up holding tens of
megabytes of freed chunks, resident, while the live buffers stay near a few megabytes a site.
On the deployment benchmark (20 sites, a 38 MB model) the server's peak fell by about 60 MB
with one arena, at the same throughput (docs/deployment.md, Memory).

:func:`limit_malloc_arenas` is ``mallopt(M_ARENA_MAX, count)``: it bounds the arenas created
from then on (those already made stay in use), so the server calls it before its gRPC threads
start. It does nothing where the C library is not glibc, or where the environment already chose
(``MALLOC_ARENA_MAX``, or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``), which then stands.
"""

from __future__ import annotations

import ctypes
import os

from fedloom.core import validate

M_ARENA_MAX = -8
"""``mallopt``'s parameter for the most arenas (glibc's ``malloc.h``)."""


def environment_chooses() -> bool:
    """Whether the process's environment sets glibc's arena count itself."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "MALLOC_ARENA_MAX" in os.environ or "glibc.malloc.arena_max" in tunables


def limit_malloc_arenas(count: int) -> bool:
    """Let glibc's malloc create at most ``count`` arenas from now on (``mallopt``); True if it
    accepted, False where it was not asked (not glibc, or the environment chose already)."""
    validate.positive_int("the malloc arena count", count)
    if environment_chooses():
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc's alone; musl's mallopt is a stub)
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count) == 1)
