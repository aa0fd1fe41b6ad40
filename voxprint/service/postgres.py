"""The speaker store and the API keys in PostgreSQL, for ``--workers N`` and several hosts.

``voxprint serve --store postgresql://USER@HOST:PORT/DB`` keeps what the SQLite store keeps, in the
tables ``voxprint_meta``, ``voxprint_speakers``, ``voxprint_enrollments`` and
``voxprint_service_keys`` (psycopg 3), with the same behaviour:

- an enrollment, a removal or a rename is one transaction; concurrent enrollments of one speaker
  queue on its row (``SELECT ... FOR UPDATE``), so its speaker model always averages every
  committed enrollment;
- every write increments ``version`` in the same transaction, which is how each worker's search
  index (:meth:`voxprint.store.SpeakerStore.identify_embedding`) knows that another worker or host
  has written;
- the store records the model of its embeddings and refuses another model's;
- speaker models a reader derives are stored in one REPEATABLE READ transaction with the version check
  (:meth:`PostgresTable.model_transaction`), so a write committed meanwhile is never overwritten.

:class:`TemporaryPostgres` starts a throw-away server (Debian's ``postgresql`` package: ``initdb`` and
``pg_ctl``) for tests and benchmarks.

Example:
    >>> is_postgres_url("postgresql://voxprint@db.example:5432/speakers"), is_postgres_url("speakers.db")
    (True, False)
    >>> display_url("postgresql://voxprint:secret@db.example/speakers")
    'postgresql://voxprint@db.example/speakers'
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from voxprint.errors import StoreError
from voxprint.service.keys import KeyTable
from voxprint.store import SpeakerStore
from voxprint.store.speakers import model_label_of
from voxprint.store.sqlite import (
    SCHEMA_VERSION,
    Enrollment,
    SpeakerReads,
    SpeakerRecord,
    _unit,
    check_speaker_id,
    model_mismatch,
)

__all__ = ["PostgresKeyTable", "PostgresSpeakerStore", "PostgresTable", "TemporaryPostgres", "display_url",
           "is_postgres_url"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS voxprint_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS voxprint_speakers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    centroid BYTEA NOT NULL,
    count INTEGER NOT NULL,
    model BYTEA
);
ALTER TABLE voxprint_speakers ADD COLUMN IF NOT EXISTS model BYTEA;
CREATE TABLE IF NOT EXISTS voxprint_enrollments (
    id BIGSERIAL PRIMARY KEY,
    speaker TEXT NOT NULL REFERENCES voxprint_speakers(id) ON DELETE CASCADE ON UPDATE CASCADE,
    source TEXT NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    quality DOUBLE PRECISION NOT NULL,
    embedding BYTEA NOT NULL,
    audio BYTEA,
    created DOUBLE PRECISION NOT NULL,
    UNIQUE (speaker, source)
);
CREATE INDEX IF NOT EXISTS voxprint_enrollments_by_speaker ON voxprint_enrollments(speaker);
CREATE TABLE IF NOT EXISTS voxprint_service_keys (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    hash TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION
)
"""
# Workers starting together would race on CREATE TABLE IF NOT EXISTS; one advisory lock orders them.
_SCHEMA_LOCK = 7_346_211_042


def is_postgres_url(store: str | os.PathLike) -> bool:
    """Whether ``store`` names a PostgreSQL database rather than a SQLite file."""
    return str(store).startswith(("postgresql://", "postgres://"))


def display_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return re.sub(r"^(postgres(?:ql)?://[^:@/]+):[^@/]*@", r"\1@", url)


def _connect(url: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("a PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'") from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the PostgreSQL store {display_url(url)}: "
                         f"{' '.join(str(exc).split())}") from None


class PostgresTable(SpeakerReads):
    """The store's tables in PostgreSQL: the interface of :class:`voxprint.store.EmbeddingTable`.

    Args:
        url: ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``.

    Raises:
        StoreError: the database cannot be reached, or its voxprint schema is of another version.
    """

    SPEAKERS_TABLE = "voxprint_speakers"
    ENROLLMENTS_TABLE = "voxprint_enrollments"
    PARAMETER = "%s"

    def __init__(self, url: str):
        self.url = url
        self.path = display_url(url)  # what messages call the store
        self._db = _connect(url)
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO voxprint_meta(key, value) VALUES ('schema', %s), ('version', '0') "
                       "ON CONFLICT (key) DO NOTHING", (str(SCHEMA_VERSION),))
        stored = self.get_meta("schema")
        if stored != str(SCHEMA_VERSION):
            raise StoreError(f"speaker store {self.path} has schema {stored}; this voxprint reads schema "
                             f"{SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction (committed on success, rolled back on any error); database errors become
        :class:`StoreError`."""
        import psycopg

        try:
            with self._db.transaction():
                yield self._db
        except psycopg.Error as exc:
            raise StoreError(f"speaker store {self.path}: {' '.join(str(exc).split())}") from None

    @contextmanager
    def model_transaction(self) -> Iterator[Any]:
        """:meth:`save_models`' transaction: REPEATABLE READ, so that its version check and its updates see one
        snapshot. At READ COMMITTED each statement sees the latest commit: a speaker enrolled again (as many
        recordings, new model) between the check and the update would get the stale model written over its
        new one. In this snapshot, updating a row that a writer changed since is a serialization failure, a
        :class:`StoreError` here, which :meth:`save_models` takes as "not stored"."""
        with self.transaction() as db:
            # Before any query: the snapshot is taken at the transaction's first one (the version check).
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield db

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        import psycopg

        try:
            return self._db.execute(sql, args).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"speaker store {self.path}: {' '.join(str(exc).split())}") from None

    def get_meta(self, key: str) -> str | None:
        """A value of the meta table, or None."""
        rows = self._query("SELECT value FROM voxprint_meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def bind_model(self, identity: str, dim: int, name: str | None = None) -> None:
        """Record the model of the embeddings (identity, size, ``--model`` name); refuse a different one."""
        with self.transaction() as db:
            db.execute("INSERT INTO voxprint_meta(key, value) VALUES ('model', %s), ('dim', %s), ('model_name', %s) "
                       "ON CONFLICT (key) DO NOTHING", (identity, str(dim), name or ""))
        stored, stored_dim = self.get_meta("model"), self.get_meta("dim")
        if stored != identity or int(stored_dim or 0) != dim:
            raise model_mismatch(self.path, stored, self.get_meta("model_name"), identity, name)

    def has_source(self, speaker_id: str, source: str) -> bool:
        """Whether ``speaker_id`` already has an enrollment named ``source``."""
        return bool(self._query("SELECT 1 FROM voxprint_enrollments WHERE speaker = %s AND source = %s",
                                (speaker_id, source)))

    def _bump_version(self, db: Any) -> None:
        db.execute("UPDATE voxprint_meta SET value = (value::bigint + 1)::text WHERE key = 'version'")

    def add(self, speaker_id: str, enrollments: Sequence[Enrollment], name: str | None = None,
            audio: Sequence[bytes | None] | None = None, identity: str | None = None,
            model_name: str | None = None) -> SpeakerRecord:
        """Add enrollments to a speaker (created if new) and update its speaker model, in one transaction.

        Enrollments whose source the speaker already has are skipped.
        """
        check_speaker_id(speaker_id)
        if identity is not None and enrollments:
            self.bind_model(identity, int(enrollments[0].embedding.shape[0]), model_name)
        audio = list(audio) if audio is not None else [None] * len(enrollments)
        now = time.time()
        with self.transaction() as db:
            if not enrollments and db.execute("SELECT 1 FROM voxprint_speakers WHERE id = %s",
                                              (speaker_id,)).fetchone() is None:
                raise StoreError(f"speaker {speaker_id!r} has no enrollment recording")
            db.execute("INSERT INTO voxprint_speakers(id, name, created, centroid, count) VALUES (%s, %s, %s, '', 0) "
                       "ON CONFLICT (id) DO NOTHING", (speaker_id, name or speaker_id, now))
            # Concurrent enrollments of this speaker wait here, so each averages every committed one.
            db.execute("SELECT 1 FROM voxprint_speakers WHERE id = %s FOR UPDATE", (speaker_id,))
            if name is not None:
                db.execute("UPDATE voxprint_speakers SET name = %s WHERE id = %s", (name, speaker_id))
            for enrollment, pcm in zip(enrollments, audio):
                db.execute("INSERT INTO voxprint_enrollments(speaker, source, seconds, quality, embedding, audio, "
                           "created) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (speaker, source) DO NOTHING",
                           (speaker_id, enrollment.source, float(enrollment.seconds), float(enrollment.quality),
                            _unit(enrollment.embedding).tobytes(), pcm, now))
            self._refresh_speaker(db, speaker_id)
            self._bump_version(db)
        return self.speaker(speaker_id)

    def _refresh_speaker(self, db: Any, speaker_id: str) -> None:
        self._write_speaker_models(db, speaker_id)  # the centroid and the back-end's model, as SQLite does

    def remove(self, speaker_id: str) -> None:
        """Delete a speaker and its enrollments.

        Raises:
            StoreError: no such speaker.
        """
        with self.transaction() as db:
            if db.execute("DELETE FROM voxprint_speakers WHERE id = %s", (speaker_id,)).rowcount == 0:
                raise StoreError(f"no speaker {speaker_id!r} in {self.path}")
            self._bump_version(db)

    def rename(self, speaker_id: str, new_id: str, name: str | None = None) -> SpeakerRecord:
        """Give a speaker a new id (and display name), keeping its enrollments.

        Raises:
            StoreError: no such speaker, or ``new_id`` is taken or invalid.
        """
        check_speaker_id(new_id)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM voxprint_speakers WHERE id = %s FOR UPDATE", (speaker_id,)).fetchone() is None:
                raise StoreError(f"no speaker {speaker_id!r} in {self.path}")
            if new_id != speaker_id and db.execute("SELECT 1 FROM voxprint_speakers WHERE id = %s",
                                                   (new_id,)).fetchone():
                raise StoreError(f"speaker id {new_id!r} is already taken in {self.path}")
            # ON UPDATE CASCADE moves the enrollments with the id; a name that was the old id follows it.
            db.execute("UPDATE voxprint_speakers SET id = %s, name = COALESCE(%s, CASE WHEN name = id THEN %s "
                       "ELSE name END) WHERE id = %s", (new_id, name, new_id, speaker_id))
            self._bump_version(db)
        return self.speaker(new_id)

    def kept_audio(self) -> list[tuple[int, str, bytes | None]]:
        """(enrollment row, speaker id, FLAC bytes or None) of every enrollment."""
        return [(row, speaker, None if audio is None else bytes(audio)) for row, speaker, audio in
                self._query("SELECT id, speaker, audio FROM voxprint_enrollments ORDER BY id")]

    def replace_embeddings(self, embeddings: dict[int, np.ndarray], identity: str, dim: int,
                           model_name: str | None = None) -> None:
        """Swap every enrollment embedding for a new model's, and rebind the store, in one transaction."""
        with self.transaction() as db:
            for row, embedding in embeddings.items():
                db.execute("UPDATE voxprint_enrollments SET embedding = %s WHERE id = %s",
                           (_unit(embedding).tobytes(), row))
            # In save_models' order (code points, as Python sorts, whatever the database's collation): the
            # two cannot deadlock on each other's row locks.
            for (speaker_id,) in db.execute('SELECT id FROM voxprint_speakers ORDER BY id COLLATE "C"').fetchall():
                self._refresh_speaker(db, speaker_id)
            db.execute("UPDATE voxprint_meta SET value = %s WHERE key = 'model'", (identity,))
            db.execute("UPDATE voxprint_meta SET value = %s WHERE key = 'dim'", (str(dim),))
            db.execute("INSERT INTO voxprint_meta(key, value) VALUES ('model_name', %s) "
                       "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (model_name or "",))
            self._bump_version(db)

    def size(self) -> tuple[int, int, int]:
        """The number of speakers, of enrollment recordings, and the bytes of the store's tables."""
        return (self._query("SELECT COUNT(*) FROM voxprint_speakers")[0][0],
                self._query("SELECT COUNT(*) FROM voxprint_enrollments")[0][0],
                self._query("SELECT pg_total_relation_size('voxprint_speakers') + pg_total_relation_size("
                            "'voxprint_enrollments') + pg_total_relation_size('voxprint_meta')")[0][0])


class PostgresSpeakerStore(SpeakerStore):
    """A :class:`~voxprint.store.SpeakerStore` whose tables are in PostgreSQL.

    Args:
        url: the database URL.
        model: the model whose embeddings the store holds (another model's store is refused).
        keep_audio: keep each enrollment's audio (16 kHz FLAC).

    Raises:
        StoreError: the database cannot be reached, or holds another model's embeddings.
    """

    def __init__(self, url: str, model: Any, keep_audio: bool = False):
        self.table = PostgresTable(url)  # in place of the SQLite file the base class opens
        self.model = model
        self.keep_audio = keep_audio
        stored = self.table.model_identity
        if stored is not None and model is not None and stored != model.identity:
            self.table.bind_model(model.identity, model.embedding_dim, model_label_of(model))


class PostgresKeyTable(KeyTable):
    """The API keys (:class:`~voxprint.service.keys.KeyTable`) in PostgreSQL.

    Args:
        url: the database URL.
    """

    table_name = "voxprint_service_keys"

    def __init__(self, url: str):
        self.path = display_url(url)
        self._store = PostgresTable(url)  # creates the tables (the keys' too)

    def close(self) -> None:
        """Close the database connection."""
        self._store.close()

    def _run(self, sql: str, args: tuple = ()) -> Any:
        import psycopg

        try:
            return self._store._db.execute(sql.replace("?", "%s"), args)
        except psycopg.Error as exc:
            raise StoreError(f"speaker store {self.path}: API key table: {' '.join(str(exc).split())}") from None


class TemporaryPostgres:
    """A throw-away PostgreSQL server in a temporary folder, on a free local port (tests, benchmarks).

    Uses ``initdb`` and ``pg_ctl`` of Debian's ``postgresql`` package (or ``$PG_BIN``). PostgreSQL
    refuses to run as root, so as root the server runs as the ``postgres`` user.

    Args:
        port: the port (default: a free one).

    Raises:
        StoreError: PostgreSQL is not installed or does not start.
    """

    def __init__(self, port: int | None = None):
        from voxprint.service.process import free_port

        self.bin = self.find_bin()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="voxprint-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql://{self.user or os.environ.get('USER', 'postgres')}@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def find_bin() -> Path:
        """The folder of ``initdb`` and ``pg_ctl``.

        Raises:
            StoreError: PostgreSQL is not installed.
        """
        candidates = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else []
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        found = shutil.which("initdb")
        if found:
            candidates.append(Path(found).parent)
        for folder in candidates:
            if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
                return folder
        raise StoreError("PostgreSQL is not installed (apt-get install postgresql, or set PG_BIN to the folder of "
                         "initdb and pg_ctl)")

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        result = subprocess.run(prefix + list(command), capture_output=True, text=True)
        if result.returncode != 0:
            raise StoreError(f"{Path(command[0]).name} failed: {' '.join((result.stderr or result.stdout).split())}")

    def start(self) -> "TemporaryPostgres":
        """Create the cluster and start the server (listening on 127.0.0.1 only); returns this object."""
        if self.user:
            shutil.chown(self.root, self.user)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user or
                  os.environ.get("USER", "postgres"), "--no-sync", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=on"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        """Stop the server (immediate shutdown: nothing is kept) and remove its folder."""
        if self.data.exists():
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except StoreError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "TemporaryPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
