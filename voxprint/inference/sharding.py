"""Bulk extraction split over several processes or machines (``torchrun ... -m voxprint embed --data``).

Each process (rank) embeds every ``world_size``-th utterance of the folder and writes its part next to
the output (``.OUT.rankK.npz``, atomically); rank 0 waits for every part, merges them in the folder's
utterance order into the one output file (``.npz`` or Kaldi ``.ark``), and removes the parts. The
ranks share nothing but the output folder, so no process group is needed: the same command works on
one machine or on several that share a file system.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxprint.errors import VoxprintError


@dataclass(frozen=True)
class Shard:
    """This process's place among the extraction processes.

    Attributes:
        rank: 0 .. world_size - 1 (rank 0 merges).
        world_size: the number of processes.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Shard":
        """The ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` that ``torchrun`` sets (one process when absent;
        ``LOCAL_RANK`` defaults to ``RANK``, as on one machine).

        Example:
            >>> Shard.from_env().world_size >= 1
            True
        """
        try:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            local = int(os.environ.get("LOCAL_RANK", rank))
        except ValueError:
            raise VoxprintError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (as torchrun sets them)") \
                from None
        if not 0 <= rank < world:
            raise VoxprintError(f"RANK {rank} is outside 0 .. WORLD_SIZE-1 ({world - 1})")
        return cls(rank, world, local)

    def device(self, requested: str, device_count: int) -> str:
        """The device this rank embeds on: a bare ``cuda`` (or ``auto`` where there are GPUs) becomes the
        rank's own GPU, ``cuda:{local_rank % device_count}``, so the ranks of a machine spread over its GPUs
        (and share them when there are more ranks than GPUs) instead of all taking the first; a request
        naming a device is kept.

        Example:
            >>> shard = Shard(rank=5, world_size=8, local_rank=3)
            >>> shard.device("cuda", 2), shard.device("auto", 4), shard.device("cuda:0", 2), shard.device("auto", 0)
            ('cuda:1', 'cuda:3', 'cuda:0', 'auto')
        """
        if requested in ("cuda", "auto") and device_count > 0:
            return f"cuda:{self.local_rank % device_count}"
        return requested

    def take(self, items: list) -> list:
        """This rank's slice: every ``world_size``-th item from ``rank``.

        Example:
            >>> Shard(1, 3).take(list(range(8)))
            [1, 4, 7]
        """
        return items[self.rank::self.world_size]

    def part_path(self, out: str | os.PathLike, rank: int | None = None) -> Path:
        """Where rank ``rank`` (default: this one) writes its part of ``out``."""
        out = Path(out)
        return out.with_name(f".{out.name}.rank{self.rank if rank is None else rank}.npz")


def merge_parts(shard: Shard, out: str | os.PathLike, order: list[str], timeout: float = 24 * 3600.0,
                poll: float = 0.5) -> tuple[list[str], np.ndarray]:
    """On rank 0: wait for every rank's part, merge them in ``order`` and remove the parts.

    Args:
        shard: rank 0's shard.
        out: the output file the parts belong to.
        order: the utterance order of the merged file (ids missing from every part were skipped).
        timeout: how long to wait for the other ranks.
        poll: seconds between looks.

    Returns:
        The merged ids and embeddings.

    Raises:
        VoxprintError: a part did not appear in time.
    """
    from voxprint.data.embeddings import load_embeddings

    deadline = time.monotonic() + timeout
    parts = [shard.part_path(out, rank) for rank in range(shard.world_size)]
    while not all(part.is_file() for part in parts):
        if time.monotonic() > deadline:
            missing = [str(p) for p in parts if not p.is_file()]
            raise VoxprintError(f"the parts of {len(missing)} ranks never appeared (first: {missing[0]}); "
                                "did every rank run?")
        time.sleep(poll)
    rows: dict[str, np.ndarray] = {}
    for part in parts:
        ids, matrix = load_embeddings(part)
        rows.update(zip(ids, matrix))
    ids = [u for u in order if u in rows]
    merged = np.stack([rows[u] for u in ids]) if ids else np.zeros((0, 0), dtype=np.float32)
    for part in parts:
        part.unlink()
    return ids, merged
