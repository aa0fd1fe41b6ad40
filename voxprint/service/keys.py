"""API keys of the service, kept (as hashes) in the speaker store's SQLite file.

A key reads ``vxp_<id>_<secret>``: the id (12 hex digits) finds the row, the secret (32 random bytes,
URL-safe base64) proves possession. Only the SHA-256 of the secret is stored, so a copy of the store
file gives nobody a usable key. A plain hash is enough here, unlike for passwords: a 256-bit random
secret cannot be guessed from its hash, so a slow password hash would only slow every request down.
Comparison is constant-time (:func:`hmac.compare_digest`), and an unknown id is compared against a
dummy hash too, so response times do not tell which ids exist.

The table (``service_keys``) lives beside the store's own tables, written only by this module; the
store's code never reads it. Keys are read on every request (one indexed row), so a revocation takes
effect at once in every worker.

Example:
    >>> import tempfile
    >>> keys = KeyTable(Path(tempfile.mkdtemp()) / "speakers.db")
    >>> record, token = keys.create("admin", label="ops")
    >>> keys.authenticate(token).role, keys.authenticate(token[:-1] + "x") is None
    ('admin', True)
    >>> keys.revoke(record.id).revoked is not None, keys.authenticate(token).revoked is not None
    (True, True)
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxprint.errors import StoreError
from voxprint.store import EmbeddingTable

__all__ = ["ROLES", "ApiKey", "KeyTable"]

#: ``admin`` may also enroll and delete speakers; ``user`` may verify, identify, embed and list.
ROLES = ("admin", "user")
_PREFIX = "vxp"
_TOKEN = re.compile(r"^vxp_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
_BUSY_TIMEOUT_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_keys (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    hash TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    revoked REAL
)
"""


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (never its secret).

    Attributes:
        id: the public part of the key, used to list and revoke it.
        role: ``admin`` or ``user``.
        label: what the key is for (free text).
        created: creation time (Unix seconds).
        revoked: revocation time, or None while the key is valid.
    """

    id: str
    role: str
    label: str
    created: float
    revoked: float | None

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"id": self.id, "role": self.role, "label": self.label, "created": round(self.created, 3),
                "revoked": None if self.revoked is None else round(self.revoked, 3)}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyTable:
    """The API keys of the service, in the store file ``path``.

    Args:
        path: the speaker store file (created, as an empty store, when missing and ``create`` is true).
        create: whether a missing store may be created.

    Raises:
        StoreError: the file is not a voxprint store, or cannot be opened or written.
    """

    #: The table of the keys (another name in a shared PostgreSQL database).
    table_name = "service_keys"

    def __init__(self, path: str | os.PathLike, create: bool = True):
        # Opening it as a store first gives the store's checks and messages (corrupt, not a store,
        # read-only, missing) and makes a new file a valid, empty store.
        EmbeddingTable(path, create=create).close()
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"speaker store {self.path}: cannot set up the API key table ({exc})") from None

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"speaker store {self.path}: API key table: {exc}") from None

    def create(self, role: str, label: str = "") -> tuple[ApiKey, str]:
        """Make a new key.

        Args:
            role: ``admin`` or ``user``.
            label: what the key is for.

        Returns:
            The key's record and the key itself, which exists nowhere else: show it once.

        Raises:
            StoreError: an unknown role, or the table cannot be written.
        """
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r}; use {' or '.join(ROLES)}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        created = time.time()
        self._run(f"INSERT INTO {self.table_name}(id, role, hash, label, created) VALUES (?, ?, ?, ?, ?)",
                  (key_id, role, _hash(secret), label, created))
        return ApiKey(key_id, role, label, created, None), f"{_PREFIX}_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first."""
        rows = self._run(f"SELECT id, role, label, created, revoked FROM {self.table_name} "
                         "ORDER BY created, id").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (it stays listed, marked revoked).

        Raises:
            StoreError: no key has this id.
        """
        self._run(f"UPDATE {self.table_name} SET revoked = COALESCE(revoked, ?) WHERE id = ?", (time.time(), key_id))
        row = self._run(f"SELECT id, role, label, created, revoked FROM {self.table_name} WHERE id = ?",
                        (key_id,)).fetchone()
        if row is None:
            raise StoreError(f"no API key {key_id!r} in {self.path}; `voxprint keys list --store {self.path}` "
                             "shows the ids")
        return ApiKey(*row)

    def authenticate(self, token: str) -> ApiKey | None:
        """The record of the key ``token``, or None when it is malformed or wrong.

        A revoked key is returned (with ``revoked`` set) only when its secret is right, so the caller can
        say "revoked" without telling strangers which ids exist.
        """
        match = _TOKEN.match(token or "")
        row = None
        if match:
            row = self._run(f"SELECT id, role, label, created, revoked, hash FROM {self.table_name} WHERE id = ?",
                            (match.group(1),)).fetchone()
        expected = row[5] if row else _DUMMY_HASH
        presented = _hash(match.group(2) if match else token or "")
        if not hmac.compare_digest(presented, expected) or row is None:
            return None
        return ApiKey(*row[:5])
