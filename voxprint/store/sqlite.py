"""The speaker store: enrolled speakers kept in one SQLite file, the system of record for identification.

One file, standard-library ``sqlite3``, WAL journal: readers never block the writer, and every write
(one speaker's enrollment, a removal, a rename) is one ``BEGIN IMMEDIATE`` transaction, so a killed
process leaves the store as it was after its last acknowledged write, and two writers queue for each
other (a busy timeout) instead of failing with "database is locked".

Tables:

- ``meta``: the model identity the embeddings were made with (:attr:`SpeakerModel.identity`), the
  embedding size, the schema version and a write counter (``version``) that search indexes compare to
  know when to refresh;
- ``speakers``: id, display name, the enrollment count, and the speaker models derived from the
  enrollments, updated in the transaction that changes them: ``centroid``, the normalised mean of their
  unit embeddings (what cosine back-ends score against, and what diarization looks for), and ``model``,
  the model the store's back-end needs when it needs another one (for PLDA the exact ``n``-utterance
  model: ``n`` and the mean of the enrollments in the PLDA space, see
  :class:`voxprint.identification.scoring.PLDAScoring`), NULL when a writer had no back-end;
- ``enrollments``: every enrollment embedding with its source name (unique per speaker, which makes
  re-running an enrollment idempotent), speech duration, a quality figure and, with
  ``keep_audio``, the 16 kHz audio (FLAC) so the store can be re-embedded with another model.

A stored ``model`` carries the fingerprint of the back-end that made it and its enrollment count, so one
that another back-end made, or that a writer without it left behind (a ``model`` column added to a
store of an earlier voxprint, an enrollment added by an earlier voxprint), is recognised and derived
again from the enrollments (:meth:`SpeakerReads.speaker_models`).

A store whose file or folder is not writable is opened read-only (SQLite's ``immutable`` mode, since the
WAL index cannot be created beside it): it can be searched and listed, and every write is refused with
one line naming it.
"""
from __future__ import annotations

import io
import os
import re
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from voxprint.errors import StoreError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 60.0
#: The most speaker ids one ``IN (...)`` query binds: far below SQLite's (32766) and PostgreSQL's (65535)
#: parameter limits, and few enough queries for any gallery.
MAX_IN_PARAMETERS = 500
#: Speaker ids: what a URL path segment, a file name and a Kaldi id all accept.
SPEAKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    centroid BLOB NOT NULL,
    count INTEGER NOT NULL,
    model BLOB
);
CREATE TABLE IF NOT EXISTS enrollments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    speaker TEXT NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    seconds REAL NOT NULL,
    quality REAL NOT NULL,
    embedding BLOB NOT NULL,
    audio BLOB,
    created REAL NOT NULL,
    UNIQUE (speaker, source)
);
CREATE INDEX IF NOT EXISTS enrollments_by_speaker ON enrollments(speaker);
"""


@dataclass(frozen=True)
class Enrollment:
    """One enrollment recording of a speaker.

    Attributes:
        source: its name (file path or caller's name), unique per speaker.
        seconds: speech duration after voice activity detection.
        quality: consistency of the recording's windows, the mean cosine of each window embedding to
            their mean (1.0 for a single window; low values suggest several voices or noise).
        embedding: its unit embedding.
        has_audio: whether the audio is kept for re-embedding.
    """

    source: str
    seconds: float
    quality: float
    embedding: np.ndarray
    has_audio: bool = False


@dataclass(frozen=True)
class SpeakerRecord:
    """An enrolled speaker.

    Attributes:
        id: the speaker id.
        name: the display name.
        count: the number of enrollment recordings.
        seconds: their total speech duration.
        centroid: the normalised mean of the unit enrollment embeddings (what cosine back-ends score, and
            what diarization looks for); the back-end's own model comes from :meth:`SpeakerReads.speaker_models`.
    """

    id: str
    name: str
    count: int
    seconds: float
    centroid: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (without the centroid)."""
        return {"id": self.id, "name": self.name, "enrollments": self.count, "seconds": round(self.seconds, 3)}


def check_speaker_id(speaker_id: str) -> str:
    """``speaker_id`` if it is a valid id (letters, digits, ``_.@+-``; 1 to 128 characters).

    Raises:
        StoreError: otherwise.

    Example:
        >>> check_speaker_id("alice_01")
        'alice_01'
    """
    if not isinstance(speaker_id, str) or not SPEAKER_ID.match(speaker_id):
        raise StoreError(f"invalid speaker id {speaker_id!r}: use 1 to 128 letters, digits or _.@+- "
                         "(starting with a letter or digit)")
    return speaker_id


def speaker_model(embeddings: np.ndarray) -> tuple[bytes, int]:
    """A speaker's stored centroid from its ``(n, D)`` enrollment embeddings: the normalised mean embedding
    as bytes, and the number of enrollments; what both the SQLite and the PostgreSQL table keep.

    Example:
        >>> centroid, count = speaker_model(np.array([[1, 0], [0, 1]], np.float32))
        >>> [round(float(v), 4) for v in np.frombuffer(centroid, np.float32)], count
        ([0.7071, 0.7071], 2)
    """
    return _unit(embeddings.mean(axis=0)).tobytes(), len(embeddings)


def recorded_model_name(path: str | os.PathLike) -> str | None:
    """The ``--model`` name a SQLite store recorded for the model of its embeddings (None when the file is
    missing, not a store, or from before names were recorded); reads the file without creating or changing it.

    Example:
        >>> recorded_model_name("/nonexistent/speakers.db") is None
        True
    """
    if not Path(path).is_file():
        return None
    try:
        with closing(_read_only_connection(Path(path))[0]) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'model_name'").fetchone()
    except sqlite3.Error:  # not a store, or damaged: opening it for real says what is wrong
        return None
    return row[0] if row and row[0] else None


def _read_only_connection(path: Path) -> tuple[sqlite3.Connection, str | None]:
    """A connection that only reads the store at ``path``, and its schema version.

    SQLite's WAL mode keeps a shared-memory index in a ``-shm`` file beside the database; when the folder
    is read-only and no writer has one open, it cannot be created and a normal (even ``mode=ro``)
    connection fails. ``immutable=1`` reads the file without it, which is right for a store nobody can
    write: a writer with permission would have left ``-wal`` and ``-shm`` files, which a normal read-only
    connection uses (tried first).

    Raises:
        sqlite3.DatabaseError: neither connection can read the store's schema.
    """
    uri = path.absolute().as_uri()
    error = sqlite3.DatabaseError("unable to open")
    for options in ("mode=ro", "immutable=1"):
        db = None
        try:
            db = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                 check_same_thread=False)
            found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchall()
            return db, found[0][0] if found else None
        except sqlite3.DatabaseError as exc:
            error = exc
            if db is not None:
                db.close()
    raise error


def model_mismatch(path: Any, stored: str, stored_name: str | None, identity: str, name: str | None) -> StoreError:
    """The error for a store opened with another model than the one its embeddings came from, naming both (by
    ``--model`` name where the store recorded one) so the user can act.

    Example:
        >>> str(model_mismatch("s.db", "vp1-a", "fused", "vp1-b", "default"))[:95]
        "speaker store s.db holds embeddings of model 'fused' (vp1-a), not of the model given, 'default'"
    """
    def named(label: str | None, identity: str) -> str:
        return f"{label!r} ({identity})" if label else identity

    return StoreError(f"speaker store {path} holds embeddings of model {named(stored_name, stored)}, not of the model "
                      f"given, {named(name, identity)}; use the model it was made with"
                      + (f" (--model {stored_name})" if stored_name else "")
                      + ", or move it to this model with `voxprint store reembed` (needs audio kept at enrollment: "
                        "--keep-audio)")


def _embedding_groups(rows: Sequence[tuple[Any, bytes]]) -> tuple[list[Any], list[np.ndarray]]:
    """``(key, embedding blob)`` rows, grouped by key in order of first appearance, as ``(n, D)`` arrays."""
    groups: dict[Any, list[np.ndarray]] = {}
    for key, blob in rows:
        groups.setdefault(key, []).append(np.frombuffer(bytes(blob), dtype=np.float32))
    return list(groups), [np.stack(v) for v in groups.values()]


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise StoreError("an embedding is zero or not finite; it cannot be stored")
    return (vector / norm).astype(np.float32)


class SpeakerReads:
    """The read queries of a speaker table, and the derivation of its speaker models, shared by SQLite and
    PostgreSQL (which differ only in table names and parameter markers). Subclasses provide ``path``,
    ``_query(sql, args)``, ``get_meta`` and ``transaction``; whoever opens the table with a model sets
    :attr:`scoring`, so that writes keep the back-end's speaker models."""

    SPEAKERS_TABLE = "speakers"
    ENROLLMENTS_TABLE = "enrollments"
    PARAMETER = "?"
    #: The speaker-model column, or ``NULL`` for a read-only store of an earlier voxprint that lacks it.
    model_column = "model"
    #: What the back-end needs as speaker models (:func:`voxprint.identification.scoring.speaker_scoring`);
    #: None: only the centroid is kept (a writer without a back-end leaves ``model`` NULL).
    scoring: Any = None
    path: Path

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def get_meta(self, key: str) -> str | None:
        """A value of the store's ``meta`` table, or None."""
        raise NotImplementedError

    @property
    def version(self) -> int:
        """Incremented by every write: a search index built at another version is stale."""
        return int(self.get_meta("version") or 0)

    @property
    def model_identity(self) -> str | None:
        """The identity of the model whose embeddings the store holds (None while empty and unbound)."""
        return self.get_meta("model")

    def _speaker_rows(self, where: str = "", args: Sequence[Any] = ()) -> list[SpeakerRecord]:
        rows = self._query(f"SELECT s.id, s.name, s.count, COALESCE(SUM(e.seconds), 0), s.centroid "
                           f"FROM {self.SPEAKERS_TABLE} s LEFT JOIN {self.ENROLLMENTS_TABLE} e ON e.speaker = s.id "
                           f"{where} GROUP BY s.id ORDER BY s.id", args)
        return [_record(row) for row in rows]

    def speaker(self, speaker_id: str) -> SpeakerRecord:
        """One speaker's record.

        Raises:
            StoreError: no such speaker.
        """
        rows = self._speaker_rows(f"WHERE s.id = {self.PARAMETER}", (speaker_id,))
        if not rows:
            raise StoreError(f"no speaker {speaker_id!r} in {self.path}; `voxprint speakers --store "
                             f"{self.path} list` shows who is enrolled")
        return rows[0]

    def speakers(self) -> list[SpeakerRecord]:
        """Every enrolled speaker, by id."""
        return self._speaker_rows()

    def enrollments(self, speaker_id: str) -> list[Enrollment]:
        """A speaker's enrollments, oldest first."""
        self.speaker(speaker_id)
        rows = self._query(f"SELECT source, seconds, quality, embedding, audio IS NOT NULL FROM "
                           f"{self.ENROLLMENTS_TABLE} WHERE speaker = {self.PARAMETER} ORDER BY id", (speaker_id,))
        return [Enrollment(source, seconds, quality, np.frombuffer(bytes(blob), dtype=np.float32), bool(has_audio))
                for source, seconds, quality, blob, has_audio in rows]

    def centroids(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """All speaker ids, their centroids (N, D) and enrollment counts (N,), by id."""
        rows = self._query(f"SELECT id, centroid, count FROM {self.SPEAKERS_TABLE} ORDER BY id")
        dim = int(self.get_meta("dim") or 0)
        if not rows:
            return [], np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        matrix = np.frombuffer(b"".join(bytes(blob) for _, blob, _ in rows), dtype=np.float32).reshape(len(rows), -1)
        return [r[0] for r in rows], matrix, np.array([r[2] for r in rows], dtype=np.int64)

    def speaker_models(self, scoring: Any, speaker_id: str | None = None
                       ) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, int]]]:
        """Every speaker's model for ``scoring`` (or one speaker's), by id.

        Stored models are used when they are ``scoring``'s (same back-end, same enrollment count); the others
        are derived from the enrollments here and returned separately too, so that the caller can store them
        (:meth:`save_models`).

        Args:
            scoring: a :class:`~voxprint.identification.scoring.SpeakerScoring`.
            speaker_id: only this speaker (None: all).

        Returns:
            ``(ids, models (N, k), counts (N,), derived)`` with ``derived``: id -> (model, count) of the models
            that were not stored.

        Raises:
            StoreError: ``speaker_id`` is not enrolled.
        """
        record = self.speaker(speaker_id) if speaker_id is not None else None  # refuses an unknown id
        if not scoring.stores_model:
            if record is None:
                ids, centroids, counts = self.centroids()
            else:
                ids, centroids, counts = [record.id], record.centroid[None], np.array([record.count])
            return ids, centroids, counts, {}
        where, args = (f"WHERE id = {self.PARAMETER}", (speaker_id,)) if speaker_id is not None else ("", ())
        rows = self._query(f"SELECT id, {self.model_column}, count FROM {self.SPEAKERS_TABLE} {where} ORDER BY id",
                           args)
        ids = [r[0] for r in rows]
        models: list[np.ndarray | None] = [scoring.decode(None if blob is None else bytes(blob), int(count))
                                           for _, blob, count in rows]
        counts = np.array([int(r[2]) for r in rows], dtype=np.int64)
        missing = [i for i, m in enumerate(models) if m is None]
        derived: dict[str, tuple[np.ndarray, int]] = {}
        if missing:
            speakers, groups = _embedding_groups(self._enrollment_embeddings([ids[i] for i in missing]))
            if speakers:
                made, made_counts = scoring.models(groups)
                derived = {spk: (model, int(n)) for spk, model, n in zip(speakers, made, made_counts)}
            for i in missing:
                # A speaker written between the two reads: its count is that of the enrollments read.
                model, count = derived.get(ids[i], (None, 0))
                if model is None:
                    raise StoreError(f"speaker {ids[i]!r} of {self.path} has no enrollment embeddings; remove it "
                                     "and enroll it again")
                models[i], counts[i] = model, count
        if not ids:
            return [], np.zeros((0, 0)), counts, {}
        return ids, np.stack(models), counts, derived

    def _enrollment_embeddings(self, speaker_ids: Sequence[str]) -> list[tuple]:
        """``(speaker, embedding blob)`` of the enrollments of ``speaker_ids`` only, by speaker then age, in
        queries of at most :data:`MAX_IN_PARAMETERS` ids (a store's other enrollments are not read)."""
        rows: list[tuple] = []
        for start in range(0, len(speaker_ids), MAX_IN_PARAMETERS):
            chunk = speaker_ids[start:start + MAX_IN_PARAMETERS]
            marks = ", ".join([self.PARAMETER] * len(chunk))
            rows += self._query(f"SELECT speaker, embedding FROM {self.ENROLLMENTS_TABLE} WHERE speaker IN ({marks}) "
                                "ORDER BY speaker, id", chunk)
        return rows

    def transaction(self) -> Any:
        """A write transaction (see the subclasses)."""
        raise NotImplementedError

    def model_transaction(self) -> Any:
        """The transaction :meth:`save_models` checks the version and stores models in: one where no other
        writer's commit can fall between the two. SQLite's :meth:`transaction` is one already (``BEGIN
        IMMEDIATE`` takes the store's single write lock before the check, and holds it to the commit);
        PostgreSQL overrides this."""
        return self.transaction()

    def check_writable(self) -> None:
        """Raise the error a write would raise when the store cannot be written at all (a read-only file).

        Raises:
            StoreError: the store is read-only.
        """
        if getattr(self, "read_only", False):
            raise StoreError(f"speaker store {self.path} is read-only (the file or its folder is not writable); "
                             "nothing was written")

    def save_models(self, scoring: Any, models: dict[str, tuple[np.ndarray, int]], version: int) -> bool:
        """Store speaker models derived while reading (:meth:`speaker_models`), if the store is still at
        ``version`` and each speaker still has the enrollment count it was derived from, without counting
        as a write: the models are what any reader derives, so no search index becomes stale. Best effort:
        a read-only or busy store goes on deriving them.

        Returns:
            Whether they were stored.
        """
        if getattr(self, "read_only", False) or not models or not scoring.stores_model or self.model_column == "NULL":
            return False
        p = self.PARAMETER
        try:
            # The check and the updates see one state of the store (see model_transaction): a write committed
            # between them could otherwise leave a stale model that looks current (a speaker enrolled again
            # with as many recordings) until the speaker's next write.
            with self.model_transaction() as db:
                if self.version != version:
                    return False
                # In id order (code points): PostgreSQL locks each row updated, and replace_embeddings takes
                # the same order, so neither another reader storing models nor it can deadlock with this one.
                for speaker_id in sorted(models):
                    model, count = models[speaker_id]
                    db.execute(f"UPDATE {self.SPEAKERS_TABLE} SET model = {p} WHERE id = {p} AND count = {p}",
                               (scoring.encode(model, count), speaker_id, count))
        except StoreError:  # busy, read-only, or (PostgreSQL) a writer came between: derived again next time
            return False
        return True

    def _write_speaker_models(self, db: Any, speaker_id: str) -> None:
        """Recompute a speaker's centroid, count and back-end model from its enrollments, inside the caller's
        transaction ``db`` (the one that changed them)."""
        p = self.PARAMETER
        rows = db.execute(f"SELECT embedding FROM {self.ENROLLMENTS_TABLE} WHERE speaker = {p} ORDER BY id",
                          (speaker_id,)).fetchall()
        embeddings = np.stack([np.frombuffer(bytes(blob), dtype=np.float32) for (blob,) in rows])
        centroid, count = speaker_model(embeddings)
        model = None
        if self.scoring is not None and self.scoring.stores_model:
            made, _ = self.scoring.models([embeddings])
            model = self.scoring.encode(made[0], count)
        db.execute(f"UPDATE {self.SPEAKERS_TABLE} SET centroid = {p}, count = {p}, model = {p} WHERE id = {p}",
                   (centroid, count, model, speaker_id))


class EmbeddingTable(SpeakerReads):
    """SQLite access to the tables above: store, read and derive speaker models (the back-end's, when
    :attr:`scoring` is set, as :class:`~voxprint.store.SpeakerStore` does).

    Args:
        path: the database file (created when missing and ``create`` is true).
        create: whether a missing file may be created.

    Raises:
        StoreError: the file is missing (and ``create`` is false), is not a voxprint store, is corrupt,
            or cannot be opened.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        #: True when the store was opened read-only (its file or folder is not writable): writes are refused.
        self.read_only = False
        if not create and not self.path.is_file():
            raise StoreError(f"speaker store {self.path} does not exist; enroll a speaker to create it")
        if self.path.is_dir():
            raise StoreError(f"speaker store {self.path} is a folder; give a file name such as speakers.db")
        if self.path.is_file() and not _writable(self.path):
            self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and os.access(self.path, os.W_OK):
                raise StoreError(f"speaker store {self.path}: the file system does not support SQLite's WAL mode")
            with self.transaction():
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                stored = self.get_meta("schema")
                if stored is None:
                    self._set_meta("schema", str(SCHEMA_VERSION))
                    self._set_meta("version", "0")
                elif stored != str(SCHEMA_VERSION):
                    raise StoreError(f"speaker store {self.path} has schema {stored}; this voxprint reads "
                                     f"schema {SCHEMA_VERSION}")
                if not self._has_model_column():
                    # A store of an earlier voxprint: the column is added, its models are derived when read.
                    self._db.execute("ALTER TABLE speakers ADD COLUMN model BLOB")
        except sqlite3.DatabaseError as exc:
            raise StoreError(_describe(self.path, exc)) from None

    def _open_read_only(self) -> None:
        """Open a store that cannot be written, for reading only (:func:`_read_only_connection`)."""
        self.read_only = True
        try:
            self._db, stored = _read_only_connection(self.path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(_describe(self.path, exc)) from None
        if stored != str(SCHEMA_VERSION):
            raise StoreError(f"speaker store {self.path} has schema {stored}; this voxprint reads schema "
                             f"{SCHEMA_VERSION}")
        if not self._has_model_column():
            self.model_column = "NULL"  # an earlier voxprint's store: every model is derived when read

    def _has_model_column(self) -> bool:
        return any(row[1] == "model" for row in self._db.execute("PRAGMA table_info(speakers)").fetchall())

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: taken at once (``BEGIN IMMEDIATE``, so writers queue instead of
        deadlocking), committed on success, rolled back on any error.

        Raises:
            StoreError: the store is read-only, or busy beyond the timeout.
        """
        self.check_writable()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise StoreError(_describe(self.path, exc)) from None
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(_describe(self.path, exc)) from None
            raise

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(_describe(self.path, exc)) from None

    def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table, or None."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                         (key, value, value))

    def _bump_version(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")

    def bind_model(self, identity: str, dim: int, name: str | None = None) -> None:
        """Record the model of the embeddings (its identity, size and ``--model`` name; inside a transaction);
        refuse a different one."""
        stored, stored_dim = self.get_meta("model"), self.get_meta("dim")
        if stored is None:
            self._set_meta("model", identity)
            self._set_meta("dim", str(dim))
            self._set_meta("model_name", name or "")
        elif stored != identity or int(stored_dim or 0) != dim:
            raise model_mismatch(self.path, stored, self.get_meta("model_name"), identity, name)

    def has_source(self, speaker_id: str, source: str) -> bool:
        """Whether ``speaker_id`` already has an enrollment named ``source``."""
        return bool(self._query("SELECT 1 FROM enrollments WHERE speaker = ? AND source = ?", (speaker_id, source)))

    def add(self, speaker_id: str, enrollments: Sequence[Enrollment], name: str | None = None,
            audio: Sequence[bytes | None] | None = None, identity: str | None = None,
            model_name: str | None = None) -> SpeakerRecord:
        """Add enrollments to a speaker (created if new) and update its speaker model, in one transaction.

        Enrollments whose source the speaker already has are skipped, so repeating an enrollment changes
        nothing. ``identity`` and ``model_name`` bind the store to the model (:meth:`bind_model`).
        """
        check_speaker_id(speaker_id)
        audio = list(audio) if audio is not None else [None] * len(enrollments)
        now = time.time()
        with self.transaction() as db:
            if identity is not None:
                self.bind_model(identity, int(enrollments[0].embedding.shape[0]) if enrollments else 0, model_name)
            exists = db.execute("SELECT name FROM speakers WHERE id = ?", (speaker_id,)).fetchone()
            if exists is None:
                if not enrollments:
                    raise StoreError(f"speaker {speaker_id!r} has no enrollment recording")
                db.execute("INSERT INTO speakers(id, name, created, centroid, count) VALUES (?, ?, ?, ?, 0)",
                           (speaker_id, name or speaker_id, now, b""))
            elif name is not None:
                db.execute("UPDATE speakers SET name = ? WHERE id = ?", (name, speaker_id))
            for enrollment, pcm in zip(enrollments, audio):
                db.execute("INSERT OR IGNORE INTO enrollments(speaker, source, seconds, quality, embedding, audio, "
                           "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (speaker_id, enrollment.source, float(enrollment.seconds), float(enrollment.quality),
                            _unit(enrollment.embedding).tobytes(), pcm, now))
            self._refresh_speaker(speaker_id)
            self._bump_version()
        return self.speaker(speaker_id)

    def _refresh_speaker(self, speaker_id: str) -> None:
        """Recompute a speaker's models from its enrollments (inside the caller's transaction)."""
        self._write_speaker_models(self._db, speaker_id)

    def remove(self, speaker_id: str) -> None:
        """Delete a speaker and its enrollments.

        Raises:
            StoreError: no such speaker.
        """
        with self.transaction() as db:
            if db.execute("DELETE FROM speakers WHERE id = ?", (speaker_id,)).rowcount == 0:
                raise StoreError(f"no speaker {speaker_id!r} in {self.path}")
            self._bump_version()

    def rename(self, speaker_id: str, new_id: str, name: str | None = None) -> SpeakerRecord:
        """Give a speaker a new id (and display name), keeping its enrollments.

        Raises:
            StoreError: no such speaker, or ``new_id`` is taken or invalid.
        """
        check_speaker_id(new_id)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM speakers WHERE id = ?", (speaker_id,)).fetchone() is None:
                raise StoreError(f"no speaker {speaker_id!r} in {self.path}")
            if new_id != speaker_id and db.execute("SELECT 1 FROM speakers WHERE id = ?", (new_id,)).fetchone():
                raise StoreError(f"speaker id {new_id!r} is already taken in {self.path}")
            if new_id == speaker_id:
                db.execute("UPDATE speakers SET name = COALESCE(?, name) WHERE id = ?", (name, speaker_id))
            else:
                # Copy the row, move the enrollments to it, delete the old row: the enrollments' foreign
                # key never points at a missing speaker. A name that was just the old id follows the id.
                db.execute("INSERT INTO speakers(id, name, created, centroid, count, model) SELECT ?, COALESCE(?, "
                           "CASE WHEN name = id THEN ? ELSE name END), created, centroid, count, model FROM speakers "
                           "WHERE id = ?", (new_id, name, new_id, speaker_id))
                db.execute("UPDATE enrollments SET speaker = ? WHERE speaker = ?", (new_id, speaker_id))
                db.execute("DELETE FROM speakers WHERE id = ?", (speaker_id,))
            self._bump_version()
        return self.speaker(new_id)

    def kept_audio(self) -> list[tuple[int, str, bytes | None]]:
        """(enrollment row, speaker id, FLAC bytes or None) of every enrollment."""
        return self._query("SELECT id, speaker, audio FROM enrollments ORDER BY id")

    def replace_embeddings(self, embeddings: dict[int, np.ndarray], identity: str, dim: int,
                           model_name: str | None = None) -> None:
        """Swap every enrollment embedding for a new model's, and rebind the store, in one transaction."""
        with self.transaction() as db:
            for row, embedding in embeddings.items():
                db.execute("UPDATE enrollments SET embedding = ? WHERE id = ?", (_unit(embedding).tobytes(), row))
            for (speaker_id,) in db.execute("SELECT id FROM speakers").fetchall():
                self._refresh_speaker(speaker_id)
            self._set_meta("model", identity)
            self._set_meta("dim", str(dim))
            self._set_meta("model_name", model_name or "")
            self._bump_version()


def encode_audio(wave: np.ndarray, sample_rate: int) -> bytes:
    """Lossless FLAC bytes of a waveform (what ``keep_audio`` stores)."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, wave, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(blob: bytes) -> tuple[np.ndarray, int]:
    """The waveform and sample rate of :func:`encode_audio`'s bytes."""
    import soundfile

    wave, rate = soundfile.read(io.BytesIO(blob), dtype="float32")
    return wave, int(rate)


def _record(row: tuple) -> SpeakerRecord:
    speaker_id, name, count, seconds, blob = row
    return SpeakerRecord(speaker_id, name, int(count), float(seconds), np.frombuffer(blob, dtype=np.float32))


def _writable(path: Path) -> bool:
    """Whether SQLite can write the store at ``path``: the file, and its folder (for the ``-wal`` and ``-shm``
    files), unless a writer already has those open."""
    if not os.access(path, os.W_OK):
        return False
    beside = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    return os.access(path.parent, os.W_OK | os.X_OK) or all(os.access(f, os.W_OK) for f in beside)


def _describe(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"speaker store {path} is corrupt or not a voxprint store ({text}); restore it from a backup"
    if "readonly" in text or "read-only" in text:
        return f"speaker store {path} is read-only; nothing was written"
    if "locked" in text or "busy" in text:
        return (f"speaker store {path} stayed busy for {BUSY_TIMEOUT_SECONDS:.0f} s (another process is writing); "
                "try again")
    if "unable to open" in text:
        return f"speaker store {path} cannot be opened ({text}); check the folder exists and is writable"
    return f"speaker store {path}: {text}"
