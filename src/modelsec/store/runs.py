"""The run store: one SQLite file with every audit, its result and the hashes of its artifacts.

Each public method opens its own short-lived connection and closes it before returning, so a
:class:`RunStore` holds no open file and may be shared between threads or used by several processes.
Writes run inside one ``BEGIN IMMEDIATE`` transaction: a run and its artifacts are stored together
or not at all.

The layout of the file is versioned with ``PRAGMA user_version`` (:data:`STORE_VERSION`); a file
written by a newer modelsec is refused rather than misread.

>>> import tempfile, pathlib
>>> store = RunStore(pathlib.Path(tempfile.mkdtemp()) / "runs.sqlite")
>>> store.list_runs()
[]
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelsec.core.errors import ConfigError, ModelsecError, StoreError, printable
from modelsec.results.audit import AuditResult
from modelsec.results.policy_audit import PolicyAuditResult
from modelsec.store.cache import SignalCache

#: Version of the SQLite layout below, kept in ``PRAGMA user_version``. Bump it (with a migration)
#: on any change to the tables.
STORE_VERSION = 1

_SCHEMA = (
    """CREATE TABLE runs (
        id            TEXT PRIMARY KEY,
        created_at    TEXT NOT NULL,
        kind          TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('complete', 'failed')),
        model_path    TEXT,
        model_sha256  TEXT,
        arch          TEXT,
        data_name     TEXT,
        seed          INTEGER,
        verdict_level TEXT,
        headline      TEXT,
        out_dir       TEXT,
        config_json   TEXT NOT NULL DEFAULT '{}',
        result_json   TEXT
    )""",
    "CREATE INDEX runs_created_at ON runs (created_at)",
    """CREATE TABLE artifacts (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        name   TEXT NOT NULL,
        path   TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size   INTEGER NOT NULL,
        PRIMARY KEY (run_id, name)
    )""",
)

_SUMMARY_COLUMNS = (
    "id, created_at, kind, status, model_path, model_sha256, arch, data_name, seed, verdict_level, headline, out_dir"
)

_CHUNK = 1 << 20


def new_run_id() -> str:
    """A new run id that sorts by creation time: UTC ``YYYYmmdd-HHMMSS`` and 6 random hex digits.

    >>> rid = new_run_id()
    >>> len(rid), rid[8], rid[15]
    (22, '-', '-')
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunSummary:
    """One row of ``modelsec runs list``: the indexed columns of a run, without its result."""

    id: str
    created_at: str  # ISO 8601, normalised to UTC when the result's timestamp could be parsed
    kind: str  # "audit" or "policy-audit"
    status: str  # "complete" or "failed"
    model_path: str | None
    model_sha256: str | None
    arch: str | None
    data_name: str | None
    seed: int | None
    verdict_level: str | None  # "ok", "warning" or "fail"
    headline: str | None
    out_dir: str | None


@dataclass(frozen=True)
class ArtifactRecord:
    """A file a run wrote, with the SHA-256 and size it had when the run was recorded."""

    name: str
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class StoredRun:
    """A run read back. ``result`` is None for a run whose status is "failed", and for a run of another kind than
    ``audit`` (a ``policy-audit``), whose result is only in ``result_dict`` (the parsed JSON, for every kind)."""

    summary: RunSummary
    result: AuditResult | None
    config: dict[str, Any]
    artifacts: list[ArtifactRecord]
    result_dict: dict[str, Any] | None = None


class RunStore:
    """A SQLite file of runs: ``record_audit`` writes; ``list_runs``, ``get``, ``verify_artifacts``.

    The file and its parent folders are created, and the tables laid out, when the store is opened, unless
    ``readonly``: a read-only store never creates or changes anything (``modelsec runs list`` and ``show``); where
    there is no store yet it holds no runs. Every problem with the file (not a SQLite database, written by a newer
    modelsec, locked, unwritable) is a :class:`~modelsec.core.errors.StoreError` whose message names the file.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        if self.path.is_dir():
            raise StoreError(f"run store {self.path} is a folder; give the path of a file")
        if readonly:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of the run store {self.path}: {printable(exc)}") from exc
        self._initialise()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    @property
    def signal_cache(self) -> SignalCache:
        """The cache of reference-model signals that lives beside this store (``<store>.signals/``)."""
        return SignalCache(self.path.with_name(self.path.name + ".signals"))

    # -- connections -----------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), always closed on exit.

        sqlite3 errors raised inside the block become :class:`StoreError` naming the file.
        """
        try:
            conn = (
                self._open_readonly()
                if self.readonly
                else sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {self.path}: {printable(exc)}") from exc
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        finally:
            conn.close()

    def _open_readonly(self) -> sqlite3.Connection:
        """A connection that cannot create the file: ``mode=rw`` (so that SQLite still tidies its WAL files away
        on closing; only reads are issued), or ``mode=ro`` where the file or its folder is not writable."""
        uri = self.path.resolve().as_uri()
        try:
            return sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=10.0, isolation_level=None)
        except sqlite3.OperationalError:
            return sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=10.0, isolation_level=None)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return StoreError(
                f"{self.path} is not a modelsec run store (not a SQLite database, or damaged); "
                "move it away or point MODELSEC_STORE at another file"
            )
        if "locked" in text or "busy" in text:
            return StoreError(f"run store {self.path} is locked by another process; try again")
        if "readonly" in text:
            return StoreError(f"run store {self.path} is read-only; check its permissions")
        return StoreError(f"run store {self.path}: {printable(text)}")

    def _holds_runs(self, conn: sqlite3.Connection) -> bool:
        """Whether the (read-only) file is a run store with its tables; ``False`` for a new, empty file."""
        version = self._user_version(conn)
        self._check_known(version)
        if version == 0:
            self._refuse_foreign_tables(conn)
            return False
        return True

    def _refuse_foreign_tables(self, conn: sqlite3.Connection) -> None:
        """A file without modelsec's schema version must hold no tables (another program's database)."""
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if tables:
            raise StoreError(
                f"{self.path} is a SQLite database but not a modelsec run store "
                f"(it has tables {', '.join(sorted(t[0] for t in tables))}); "
                "point MODELSEC_STORE at another file"
            )

    def _initialise(self) -> None:
        with self._connect() as conn:
            version = self._user_version(conn)
            if version == STORE_VERSION:
                return
            self._check_known(version)
            with self._transaction(conn):
                # Re-read under the write lock: another process may have created the tables.
                version = self._user_version(conn)
                self._check_known(version)
                if version == 0:
                    self._refuse_foreign_tables(conn)
                    for statement in _SCHEMA:  # not executescript(): it would COMMIT first
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {STORE_VERSION}")
            # Outside the transaction (journal mode cannot change inside one); kept in the file.
            conn.execute("PRAGMA journal_mode = WAL")

    @staticmethod
    def _user_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_known(self, version: int) -> None:
        if version > STORE_VERSION:
            raise StoreError(
                f"run store {self.path} was written by a newer modelsec (store version {version}; "
                f"this one reads up to {STORE_VERSION}): upgrade modelsec to read it"
            )
        if version < 0:
            raise StoreError(f"{self.path} has an invalid store version {version}")

    # -- writing ---------------------------------------------------------------------------------

    def _checked_artifacts(self, run_id: str, artifacts: dict[str, Path]) -> list[ArtifactRecord]:
        """Refuse a write to a read-only store or a run without an id, then hash every artifact (before anything
        is written)."""
        if self.readonly:
            raise StoreError(f"the run store {self.path} was opened read-only; cannot record a run")
        if not run_id:
            raise StoreError("cannot record a run with an empty run id")
        return [self._hash_artifact(name, Path(p)) for name, p in sorted(artifacts.items())]

    def record_audit(self, result: AuditResult, *, out_dir: str | None, artifacts: dict[str, Path]) -> str:
        """Store a complete audit and the SHA-256 and size of each artifact file; return the run id.

        The run id is ``result.run_id`` and must not be in the store yet. Paths (``out_dir`` and
        the artifacts) are stored absolute so ``verify_artifacts`` works from any working directory.
        Every artifact must exist: it is hashed now, before anything is written.
        """
        records = self._checked_artifacts(result.run_id, artifacts)
        row = (
            result.run_id,
            _normalise_timestamp(result.created_at),
            "audit",
            "complete",
            result.model.path,
            result.model.sha256,
            result.model.arch,
            result.data.name,
            result.seed,
            result.verdict.level,
            result.verdict.headline,
            None if out_dir is None else str(Path(out_dir).expanduser().resolve()),
            json.dumps(result.settings, sort_keys=True, allow_nan=False),
            result.to_json(indent=None),
        )
        self._insert_run(row, records)
        return result.run_id

    def record_policy_audit(self, result: PolicyAuditResult, *, out_dir: str | None, artifacts: dict[str, Path]) -> str:
        """Store a complete policy audit (kind ``policy-audit``: the policy file as the model, the environment id
        as the data) and its artifacts' hashes, as :meth:`record_audit` does; return the run id."""
        records = self._checked_artifacts(result.run_id, artifacts)
        row = (
            result.run_id,
            _normalise_timestamp(result.created_at),
            "policy-audit",
            "complete",
            result.policy.path,
            result.policy.sha256,
            result.policy.card.get("arch"),
            result.env_id,
            result.seed,
            result.verdict.level,
            result.verdict.headline,
            None if out_dir is None else str(Path(out_dir).expanduser().resolve()),
            json.dumps(result.settings, sort_keys=True, allow_nan=False),
            result.to_json(indent=None),
        )
        self._insert_run(row, records)
        return result.run_id

    def _insert_run(self, row: tuple[Any, ...], records: list[ArtifactRecord]) -> None:
        run_id = row[0]
        with self._connect() as conn, self._transaction(conn):
            try:
                conn.execute(
                    "INSERT INTO runs (id, created_at, kind, status, model_path, model_sha256, "
                    "arch, data_name, seed, verdict_level, headline, out_dir, config_json, "
                    "result_json) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"run {run_id} is already in the run store {self.path}") from exc
            conn.executemany(
                "INSERT INTO artifacts (run_id, name, path, sha256, size) VALUES (?, ?, ?, ?, ?)",
                [(run_id, a.name, a.path, a.sha256, a.size) for a in records],
            )

    @staticmethod
    def _hash_artifact(name: str, path: Path) -> ArtifactRecord:
        path = path.expanduser().resolve()
        try:
            digest, size = _sha256_file(path)
        except OSError as exc:
            raise StoreError(f"cannot read artifact {name!r} at {path}: {printable(exc)}") from exc
        return ArtifactRecord(name=name, path=str(path), sha256=digest, size=size)

    # -- reading ---------------------------------------------------------------------------------

    def list_runs(self, limit: int = 50) -> list[RunSummary]:
        """The ``limit`` most recent runs, newest first (ties: the one recorded last first)."""
        if limit < 1:
            raise ConfigError(f"limit must be a positive number of runs, got {limit}")
        if self.readonly and not self.path.exists():
            return []
        with self._connect() as conn:
            if self.readonly and not self._holds_runs(conn):
                return []
            rows = conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [RunSummary(*row) for row in rows]

    def get(self, run_id_or_prefix: str) -> StoredRun:
        """The run with this id, or the only run whose id starts with this prefix."""
        self._check_exists()
        with self._connect() as conn:
            run_id = self._resolve(conn, run_id_or_prefix)
            row = conn.execute(
                f"SELECT {_SUMMARY_COLUMNS}, config_json, result_json FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            artifacts = self._artifacts(conn, run_id)
        summary = RunSummary(*row[:12])
        config_json, result_json = row[12], row[13]
        try:
            config = json.loads(config_json) if config_json else {}
            result_dict = None if result_json is None else json.loads(result_json)
            result = None if result_dict is None or summary.kind != "audit" else AuditResult.from_dict(result_dict)
        except (ModelsecError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"run {run_id} in {self.path} has a result this version of modelsec cannot read "
                f"({printable(exc)}); upgrade modelsec if a newer one wrote the run"
            ) from exc
        return StoredRun(summary=summary, result=result, config=config, artifacts=artifacts, result_dict=result_dict)

    def verify_artifacts(self, run_id: str) -> dict[str, bool]:
        """Re-hash each artifact of a run (id or unique prefix).

        Returns artifact name -> True if the file is unchanged, False if it changed or is gone.
        """
        self._check_exists()
        with self._connect() as conn:
            artifacts = self._artifacts(conn, self._resolve(conn, run_id))
        status: dict[str, bool] = {}
        for art in artifacts:
            path = Path(art.path)
            try:
                same = path.stat().st_size == art.size and _sha256_file(path)[0] == art.sha256
            except OSError:
                same = False
            status[art.name] = same
        return status

    def _check_exists(self) -> None:
        if self.readonly and not self.path.exists():
            raise StoreError(
                f"no run store at {self.path}: no runs recorded there yet; give the store with --store or "
                "$MODELSEC_STORE"
            )

    def _resolve(self, conn: sqlite3.Connection, run_id_or_prefix: str) -> str:
        key = run_id_or_prefix.strip()
        if not key:
            raise StoreError("give a run id (or the start of one)")
        if self.readonly and not self._holds_runs(conn):
            raise StoreError(f"no run {key!r} in {self.path}: the store holds no runs yet")
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (key,)).fetchone():
            return key
        matches = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 11",
                (len(key), key),
            )
        ]
        if not matches:
            raise StoreError(f"no run {key!r} in {self.path}; `modelsec runs list` shows the runs")
        if len(matches) > 1:
            shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
            raise StoreError(f"run id prefix {key!r} is ambiguous; it matches {shown}")
        return str(matches[0])

    @staticmethod
    def _artifacts(conn: sqlite3.Connection, run_id: str) -> list[ArtifactRecord]:
        rows = conn.execute(
            "SELECT name, path, sha256, size FROM artifacts WHERE run_id = ? ORDER BY name",
            (run_id,),
        ).fetchall()
        return [ArtifactRecord(*row) for row in rows]


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _normalise_timestamp(stamp: str) -> str:
    """ISO 8601 in UTC (``2026-11-25T22:45:01+00:00``) so runs sort by time; unparsable: unchanged.

    >>> _normalise_timestamp("2026-11-25T23:45:01+01:00")
    '2026-11-25T22:45:01+00:00'
    >>> _normalise_timestamp("2026-11-25T22:45:01Z")
    '2026-11-25T22:45:01+00:00'
    """
    text = stamp.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"  # Python 3.10's fromisoformat does not accept "Z"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # naive timestamps are taken as UTC
    return moment.astimezone(timezone.utc).isoformat()
