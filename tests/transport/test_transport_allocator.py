"""glibc's malloc set for chunk traffic. The arena limit: glibc accepts it and threads started
afterwards share the arenas allowed, not one each. Chunks kept on the heap: a stream of
chunk-sized blocks stops costing fresh pages after its first pass. What the environment chose
stands. Each case runs in its own interpreter (the settings are process-wide), counting arenas
with glibc's ``malloc_stats`` and fresh pages as the kernel's minor page faults."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedloom.transport.allocator import limit_malloc_arenas

SRC = Path(__file__).resolve().parents[2] / "src"

try:
    ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    GLIBC = True
except (AttributeError, OSError):
    GLIBC = False

needs_glibc = pytest.mark.skipif(not GLIBC, reason="arenas are glibc's")

THREADS = 6

SCRIPT = textwrap.dedent(
    f"""
    import ctypes, sys, threading
    from fedloom.transport.allocator import limit_malloc_arenas

    if sys.argv[1] != "none":
        print(limit_malloc_arenas(int(sys.argv[1])))
    # Every thread allocates while all are alive, so none can take over a finished one's arena.
    started = threading.Barrier({THREADS})
    done = threading.Barrier({THREADS} + 1)
    kept = []

    def work():
        started.wait()
        kept.append(bytearray(200_000))  # past pymalloc's limit: malloc, in this thread's arena
        done.wait()
        done.wait()

    threads = [threading.Thread(target=work) for _ in range({THREADS})]
    for thread in threads:
        thread.start()
    done.wait()
    ctypes.CDLL(None).malloc_stats()  # one "Arena N:" paragraph an arena, on stderr
    done.wait()
    for thread in threads:
        thread.join()
    """
)


def fresh(script: str, argument: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``script`` run with ``argument`` in a fresh interpreter whose environment sets nothing
    of malloc's but ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.pop("GLIBC_TUNABLES", None)
    environment.update(PYTHONPATH=str(SRC), **env)
    return subprocess.run(
        [sys.executable, "-c", script, argument],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def arenas(limit: str, **env: str) -> tuple[str, int]:
    """What ``limit_malloc_arenas(limit)`` returned (or nothing, for ``"none"``) in a fresh
    interpreter, and how many arenas its threads then used."""
    done = fresh(SCRIPT, limit, env)
    count = sum(line.startswith("Arena ") for line in done.stderr.splitlines())
    return done.stdout.strip(), count


@needs_glibc
def test_without_a_limit_each_thread_gets_an_arena() -> None:
    # the baseline the limit changes: glibc's default allows eight arenas a core
    assert arenas("none") == ("", THREADS + 1)


@needs_glibc
@pytest.mark.parametrize("limit", [1, 2])
def test_after_the_limit_threads_share_the_arenas_allowed(limit: int) -> None:
    assert arenas(str(limit)) == ("True", limit)


@needs_glibc
def test_an_arena_count_from_the_environment_stands() -> None:
    assert arenas("1", MALLOC_ARENA_MAX="3") == ("False", 3)
    assert arenas("1", GLIBC_TUNABLES="glibc.malloc.arena_max=2") == ("False", 2)


@pytest.mark.parametrize("count", [0, -1, True, 1.5, "2"])
def test_a_count_below_one_or_not_an_integer_is_refused(count: object) -> None:
    with pytest.raises(ValueError, match=rf"integer >= 1, got {count!r}"):
        limit_malloc_arenas(count)  # type: ignore[arg-type]


CHUNKS = textwrap.dedent(
    """
    import resource, sys
    from fedloom.transport.allocator import keep_chunks_on_heap, tune_malloc

    if sys.argv[1] == "keep":
        print(keep_chunks_on_heap())
    elif sys.argv[1] == "tune":
        print(tune_malloc(1))

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def stream():  # six 1 MiB chunks in flight, then gone, as a round's traffic comes and goes
        held = [bytes(1 << 20) for _ in range(6)]
        del held

    for _ in range(3):  # the heap grows to what a pass needs
        stream()
    before = faults()
    for _ in range(20):
        stream()
    print(faults() - before)
    """
)


def fresh_pages(how: str, **env: str) -> tuple[list[str], int]:
    """What the setting said, and the page faults of 20 passes of chunks after three."""
    done = fresh(CHUNKS, how, env)
    *said, faults = done.stdout.split("\n")[:-1]
    return said, int(faults)


PAGES_A_PASS = 6 * (1 << 20) // 4096


@needs_glibc
def test_chunks_kept_on_the_heap_stop_costing_fresh_pages() -> None:
    said, faults = fresh_pages("keep")
    assert said == ["True"]
    assert faults < PAGES_A_PASS // 20  # 20 passes of six MiB, on pages already mapped
    said, tuned = fresh_pages("tune")
    assert said == ["at most 1 arena; chunks kept on the heap"]
    assert tuned < PAGES_A_PASS // 20
    _, untuned = fresh_pages("none")  # glibc's own placement maps fresh pages again and again
    assert untuned > PAGES_A_PASS


@needs_glibc
def test_a_placement_from_the_environment_stands() -> None:
    said, _ = fresh_pages("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert said == ["False"]
    said, _ = fresh_pages("tune", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")
    assert said == ["at most 1 arena; chunk blocks as glibc places them"]
    said, _ = fresh_pages("tune", MALLOC_ARENA_MAX="2")
    assert said == ["arenas as they are; chunks kept on the heap"]
