"""The run store's tables, as portable SQL.

Schema version 1::

    meta(key TEXT PRIMARY KEY, value TEXT)             -- schema_version = "1"
    runs(id TEXT PRIMARY KEY, name, status, created, finished, duration REAL,
         seed INTEGER, code_version, config TEXT, config_format, stopped)
    rounds(run_id → runs.id, round INTEGER, metrics TEXT (JSON), aborted TEXT,
           seconds REAL, bytes_up REAL, bytes_down REAL, PRIMARY KEY (run_id, round))
    participants(run_id, round, position INTEGER, client INTEGER,
                 status TEXT ('accepted' | 'rejected'), reason TEXT,
                 PRIMARY KEY (run_id, round, client), (run_id, round) → rounds)
    checkpoints(run_id PRIMARY KEY → runs.id, round INTEGER, data BLOB, created)
    sites(run_id → runs.id, client INTEGER, site TEXT, PRIMARY KEY (run_id, client))
        -- only once a deployed run records client i's certificate identity (SITES_TABLE)

    owners(run_id PRIMARY KEY → runs.id, host TEXT, pid INTEGER, heartbeat TEXT)
        -- the process that last created, reopened or recorded a round of the run (OWNERS_TABLE)

    audit(run_id → runs.id, seq INTEGER, kind TEXT, payload TEXT (canonical JSON), created,
          prev_hash TEXT, hash TEXT, PRIMARY KEY (run_id, seq))   -- see fedloom.store.audit

The ``owners`` table was added the same way as ``sites`` (made by the first run that records
its owner): it lets a reader tell a ``running`` run whose process is gone (killed with SIGKILL,
a lost machine) from one that is alive.

The ``audit`` table was added without a version change: it is made when a run first appends an
audit entry (``CREATE TABLE IF NOT EXISTS``), so a store that never held one stays exactly as
schema version 1 describes, and older fedloom ignores it. SQLite triggers made with it refuse
updates and deletes (:data:`fedloom.store.connection.AUDIT_GUARDS`).

Times are ISO 8601 text in UTC. ``participants.position`` is the client's place in the round's
cohort, so a cohort comes back in the order it was sampled. ``rounds.metrics`` is a JSON object
that may hold ``NaN`` and ``Infinity`` (Python's ``json`` writes and reads them). Only the newest
checkpoint of each run is kept, which bounds a store's size by its runs, not their rounds.

Portability: the statements below use only ``CREATE TABLE`` with INTEGER/REAL/TEXT/BLOB,
``CHECK``, foreign keys, ``substr`` and ``LIMIT``, so a PostgreSQL backend can reuse them with
two changes: ``BLOB`` becomes ``BYTEA`` (see :func:`ddl`), and the ``?`` placeholders become
``%s`` (psycopg's paramstyle; see :func:`for_paramstyle`). The SQLite-only parts (the
``PRAGMA`` lines and ``BEGIN IMMEDIATE``) live in :mod:`fedloom.store.connection`.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
"""The newest schema this fedloom writes and reads; older ones would be migrated on open."""

SITES_TABLE = """CREATE TABLE IF NOT EXISTS sites (
        run_id TEXT NOT NULL REFERENCES runs (id),
        client INTEGER NOT NULL,
        site TEXT NOT NULL,
        PRIMARY KEY (run_id, client)
    )"""
"""Made when a deployed run first records its sites (``CREATE TABLE IF NOT EXISTS``), so
stores that never held a deployed run stay exactly as schema version 1 describes."""

AUDIT_TABLE = """CREATE TABLE IF NOT EXISTS audit (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    )"""

HAS_AUDIT = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit'"

_TABLES = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        created TEXT NOT NULL,
        finished TEXT,
        duration REAL,
        seed INTEGER NOT NULL,
        code_version TEXT NOT NULL,
        config TEXT NOT NULL,
        config_format TEXT NOT NULL,
        stopped TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS rounds (
        run_id TEXT NOT NULL REFERENCES runs (id),
        round INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        aborted TEXT,
        seconds REAL NOT NULL,
        bytes_up REAL,
        bytes_down REAL,
        PRIMARY KEY (run_id, round)
    )""",
    """CREATE TABLE IF NOT EXISTS participants (
        run_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        position INTEGER NOT NULL,
        client INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
        reason TEXT NOT NULL,
        PRIMARY KEY (run_id, round, client),
        FOREIGN KEY (run_id, round) REFERENCES rounds (run_id, round)
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run_id TEXT PRIMARY KEY REFERENCES runs (id),
        round INTEGER NOT NULL,
        data BLOB NOT NULL,
        created TEXT NOT NULL
    )""",
)


def ddl(*, binary_type: str = "BLOB") -> tuple[str, ...]:
    """The ``CREATE TABLE`` statements; PostgreSQL passes ``binary_type="BYTEA"``."""
    return tuple(table.replace(" BLOB ", f" {binary_type} ") for table in _TABLES)


def for_paramstyle(statement: str, paramstyle: str = "qmark") -> str:
    """``statement`` with its ``?`` placeholders rewritten for a DB-API ``paramstyle``."""
    if paramstyle == "qmark":
        return statement
    if paramstyle == "format":
        return statement.replace("%", "%%").replace("?", "%s")
    raise ValueError(f"paramstyle must be 'qmark' or 'format', got {paramstyle!r}")


GET_VERSION = "SELECT value FROM meta WHERE key = 'schema_version'"
SET_VERSION = "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"

INSERT_RUN = """INSERT INTO runs
    (id, name, status, created, finished, duration, seed, code_version, config, config_format,
     stopped)
    VALUES (?, ?, 'running', ?, NULL, NULL, ?, ?, ?, ?, '')"""
RUN_CREATED = "SELECT created FROM runs WHERE id = ?"
FINISH_RUN = "UPDATE runs SET status = ?, stopped = ?, finished = ?, duration = ? WHERE id = ?"
REOPEN_RUN = (
    "UPDATE runs SET status = 'running', stopped = '', finished = NULL, duration = NULL "
    "WHERE id = ?"
)
_RUN_COLUMNS = """SELECT r.id, r.name, r.status, r.created, r.finished, r.duration, r.seed,
    r.code_version, r.config, r.config_format, r.stopped,
    (SELECT COUNT(*) FROM rounds d WHERE d.run_id = r.id),
    (SELECT d.metrics FROM rounds d WHERE d.run_id = r.id ORDER BY d.round DESC LIMIT 1)
    FROM runs r"""
ALL_RUNS = _RUN_COLUMNS + " ORDER BY r.created DESC, r.id DESC"
RUN_BY_ID = _RUN_COLUMNS + " WHERE r.id = ?"
RUN_IDS_WITH_PREFIX = "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id"
RECENT_RUN_IDS = "SELECT id FROM runs ORDER BY created DESC, id DESC LIMIT ?"

DELETE_PARTICIPANTS = "DELETE FROM participants WHERE run_id = ? AND round = ?"
DELETE_ROUND = "DELETE FROM rounds WHERE run_id = ? AND round = ?"
INSERT_ROUND = """INSERT INTO rounds
    (run_id, round, metrics, aborted, seconds, bytes_up, bytes_down)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""
INSERT_PARTICIPANT = """INSERT INTO participants
    (run_id, round, position, client, status, reason) VALUES (?, ?, ?, ?, ?, ?)"""
SELECT_ROUNDS = """SELECT round, metrics, aborted, seconds FROM rounds
    WHERE run_id = ? ORDER BY round"""
SELECT_PARTICIPANTS = """SELECT round, client, status, reason FROM participants
    WHERE run_id = ? ORDER BY round, position"""

DELETE_CHECKPOINT = "DELETE FROM checkpoints WHERE run_id = ?"
INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, round, data, created) VALUES (?, ?, zeroblob(?), ?)"
)
"""A checkpoint's row with room for its bytes, written then through a blob handle (bound as a
parameter, the bytes would be copied, and the copy kept by the cached statement)."""
SELECT_CHECKPOINT = "SELECT data FROM checkpoints WHERE run_id = ?"

DELETE_SITES = "DELETE FROM sites WHERE run_id = ?"
INSERT_SITE = "INSERT INTO sites (run_id, client, site) VALUES (?, ?, ?)"
SELECT_SITES = "SELECT site FROM sites WHERE run_id = ? ORDER BY client"
HAS_SITES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'sites'"

OWNERS_TABLE = """CREATE TABLE IF NOT EXISTS owners (
        run_id TEXT PRIMARY KEY REFERENCES runs (id),
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        heartbeat TEXT NOT NULL
    )"""
"""Made when a run first records its owning process, so older stores stay as version 1 says."""
HAS_OWNERS = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'owners'"
CLAIM_RUN = "INSERT OR REPLACE INTO owners (run_id, host, pid, heartbeat) VALUES (?, ?, ?, ?)"
BEAT = "UPDATE owners SET heartbeat = ? WHERE run_id = ? AND host = ? AND pid = ?"
SELECT_OWNER = "SELECT host, pid, heartbeat FROM owners WHERE run_id = ?"
