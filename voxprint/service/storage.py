"""Where the service keeps its data: a SQLite file (default) or a PostgreSQL database (``postgresql://...``).

The same three things, whichever it is: speaker stores (one per concurrent request), the API keys,
and the store's size for ``/metrics``.

Example:
    >>> import tempfile, voxprint
    >>> path = str(Path(tempfile.mkdtemp()) / "speakers.db")
    >>> store = open_store(path, voxprint.load_model("default"))
    >>> _ = open_keys(path).create("user")
    >>> {name: value for name, value in store_size(store).items() if name != "bytes"}
    {'speakers': 0, 'enrollments': 0, 'version': 0}
"""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from voxprint.service.keys import KeyTable
from voxprint.service.postgres import (
    PostgresKeyTable,
    PostgresSpeakerStore,
    PostgresTable,
    display_url,
    is_postgres_url,
)
from voxprint.store import SpeakerStore

__all__ = ["open_keys", "open_store", "store_name", "store_size"]


def store_name(store: str) -> str:
    """How messages name the store: its path, or its URL without the password."""
    return display_url(store) if is_postgres_url(store) else store


def open_store(store: str, model: Any, create: bool = True) -> SpeakerStore:
    """A speaker store over ``store`` (a SQLite file, created when missing and ``create``; or a URL).

    Raises:
        StoreError: it cannot be opened, or holds another model's embeddings.
    """
    if is_postgres_url(store):
        return PostgresSpeakerStore(store, model)
    return SpeakerStore(store, model, create=create)


def open_keys(store: str, create: bool = True) -> KeyTable:
    """The API keys kept with ``store``.

    Raises:
        StoreError: the store cannot be opened (or is a missing file and ``create`` is false).
    """
    return PostgresKeyTable(store) if is_postgres_url(store) else KeyTable(store, create=create)


def store_size(store: SpeakerStore) -> dict[str, int]:
    """Speakers, enrollment recordings and the write counter of ``store`` (plus ``bytes`` of its files
    or tables where known), counted with SQL ``COUNT``, which stays cheap for large stores."""
    table = store.table
    if isinstance(table, PostgresTable):
        speakers, enrollments, size = table.size()
        return {"speakers": speakers, "enrollments": enrollments, "version": table.version, "bytes": size}
    # The SQLite store's own tables (voxprint/store/sqlite.py), read on a short-lived connection.
    with closing(sqlite3.connect(Path(table.path).resolve().as_uri() + "?mode=ro", uri=True)) as db:
        speakers = db.execute("SELECT COUNT(*) FROM speakers").fetchone()[0]
        enrollments = db.execute("SELECT COUNT(*) FROM enrollments").fetchone()[0]
    size = {"speakers": speakers, "enrollments": enrollments, "version": table.version}
    files = [Path(f"{table.path}{suffix}") for suffix in ("", "-wal", "-shm")]
    if any(f.exists() for f in files):
        size["bytes"] = sum(f.stat().st_size for f in files if f.exists())
    return size
