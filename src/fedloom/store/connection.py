"""Opening a SQLite store safely: the only SQLite-specific code in :mod:`fedloom.store`.

An existing file is first opened read-only to check that it is a fedloom store this version can
read, so a file written by a newer fedloom, or one that is not a database at all, is never
modified. Read-write connections use write-ahead logging (readers never block the writer) and a
busy timeout, so several processes can write one store at once: a writer waits for the lock
rather than failing with "database is locked". Writes go through :func:`transaction`.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from fedloom.store import schema
from fedloom.store.errors import StoreError

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's transaction before giving up."""

_PRAGMAS = (
    f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}",
    "PRAGMA foreign_keys = ON",
    # With WAL, NORMAL loses at most the last commits on power loss, never consistency.
    "PRAGMA synchronous = NORMAL",
)
_LIST_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"
AUDIT_GUARDS = tuple(
    f"""CREATE TRIGGER IF NOT EXISTS audit_no_{action.lower()} BEFORE {action} ON audit
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"""
    for action in ("UPDATE", "DELETE")
)
"""SQLite's guard on the audit table; the hash chain is what detects tampering past it."""


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A read-write connection to the store at ``path``, with its schema in place.

    Raises :class:`StoreError` naming ``path`` when the file is not a fedloom store, was written
    by a newer schema, or cannot be created or written.
    """
    if path.exists():
        if not path.is_file():
            raise StoreError(f"{path} is not a file; give the path of a store file")
        _check_readable(path, create=create)
    elif not create:
        raise StoreError(f"no store at {path}; run something first or check the path")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the store {path}: {_reason(error)}") from None
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {path}: {error}") from None
    try:
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        _use_wal(conn)
        with transaction(conn, path):
            _ensure_schema(conn, path, create=create)
    except sqlite3.Error as error:
        conn.close()
        raise StoreError(f"cannot open the store {path}: {error}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def connect_read_only(path: Path, *, timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A read-only connection to the existing store at ``path``, which it can never modify.

    For readers beside a running experiment (the dashboard): SQLite refuses every write through
    it. Raises :class:`StoreError` naming ``path`` when there is no store there, it is not one,
    it was written by a newer schema, or it stays locked for ``timeout_s`` seconds.
    """
    if not path.is_file():
        raise StoreError(f"no store at {path}; run something first or check the path")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {path}: {error}") from None
    try:
        _read_version(conn, path, create=False)
    except sqlite3.DatabaseError as error:
        conn.close()
        if "locked" in str(error):
            raise StoreError(f"the store {path} is locked by another process: {error}") from None
        raise StoreError(f"{path} is not a fedloom store ({error})") from None
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed if the block finishes, rolled back if it raises.

    ``BEGIN IMMEDIATE`` takes the write lock at the start (waiting up to the busy timeout), so
    a transaction never fails halfway for want of a lock. SQLite errors become
    :class:`StoreError`; other exceptions pass through after the rollback.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as error:
        raise StoreError(f"cannot write to the store {path}: {error}") from None
    try:
        yield conn
    except BaseException as error:
        conn.rollback()
        if isinstance(error, sqlite3.Error):
            raise StoreError(f"cannot write to the store {path}: {error}") from None
        raise
    try:
        conn.commit()
    except sqlite3.Error as error:
        conn.rollback()
        raise StoreError(f"cannot write to the store {path}: {error}") from None


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch to write-ahead logging, waiting while another process switches it.

    SQLite answers "database is locked" at once, without its busy handler, when two
    connections switch a new file's journal mode together, so this retries until the busy
    timeout. A filesystem without WAL support keeps its rollback journal, which is slower
    under concurrent writers but just as safe.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(0.005, 0.03))


def _check_readable(path: Path, *, create: bool) -> None:
    """Check an existing file through a read-only connection, which cannot modify it."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {path}: {error}") from None
    try:
        _read_version(conn, path, create=create)
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path} is not a fedloom store ({error})") from None
    finally:
        conn.close()


def _ensure_schema(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    if _read_version(conn, path, create=create) is not None:
        return
    for statement in schema.ddl():
        conn.execute(statement)
    conn.execute(schema.SET_VERSION, (str(schema.SCHEMA_VERSION),))


def ensure_audit_table(conn: sqlite3.Connection) -> None:
    """Make the audit table and its append-only guards if missing (inside a transaction)."""
    conn.execute(schema.AUDIT_TABLE)
    for guard in AUDIT_GUARDS:
        conn.execute(guard)


def _read_version(conn: sqlite3.Connection, path: Path, *, create: bool) -> int | None:
    """The store's schema version, or ``None`` for an empty database that ``create`` allows."""
    tables = {row[0] for row in conn.execute(_LIST_TABLES)}
    if not tables:
        if create:
            return None
        raise StoreError(f"{path} is an empty database, not a fedloom store")
    row = conn.execute(schema.GET_VERSION).fetchone() if "meta" in tables else None
    if row is None:
        raise StoreError(f"{path} is a database but not a fedloom store (no schema version)")
    try:
        version = int(row[0])
    except ValueError:
        raise StoreError(f"{path} has an unreadable schema version {row[0]!r}") from None
    if version > schema.SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by schema version {version}, this fedloom reads up to "
            f"{schema.SCHEMA_VERSION}; upgrade fedloom"
        )
    return version


def _reason(error: OSError) -> str:
    if error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    return error.strerror or str(error)
