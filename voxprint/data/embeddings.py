"""Saving and loading utterance (or speaker) embeddings.

The format is chosen by the file suffix:

``.npz``
    A NumPy archive with exactly two arrays: ``ids`` (1-D unicode strings, one per row) and
    ``embeddings`` (float32, shape ``(n, d)``). Written to a temporary file in the same folder
    and renamed, so readers never see a half-written file and a failed write leaves an
    existing file untouched. Loaded with ``allow_pickle=False``.
``.ark``
    A binary Kaldi archive (one float32 vector per id, in order) written with kaldiio, plus a
    Kaldi ``.scp`` index beside it (same name, ``.scp`` suffix) whose lines are
    ``ID ABSOLUTE_ARK_PATH:OFFSET``. Both are written completely to temporary names first and
    then renamed (the ark, then the scp). :func:`load_embeddings` reads ``.ark`` files directly
    (the scp is not needed; binary or text arks, vectors or 1 x d matrices) and also accepts an
    ``.scp`` file, e.g. one made by Kaldi or WeSpeaker. For safety only plain
    ``ID FILE:OFFSET`` scp lines are followed (no ``cmd |`` pipes, no ``[range]``; a relative
    ``FILE`` is looked up from the working folder, then beside the scp), and ark entries
    that are not float vectors/matrices (pickled objects, audio, NPY) are refused.

Ids must be unique, non-empty and free of whitespace (trial lists and scp files are
whitespace-separated); embeddings must be finite. Anything else raises
:class:`~voxprint.errors.DataError` naming the file.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "emb.npz")
    >>> _ = save_embeddings(path, ["utt1", "utt2"], np.eye(2, 3))
    >>> ids, matrix = load_embeddings(path)
    >>> ids, matrix.shape, matrix.dtype
    (['utt1', 'utt2'], (2, 3), dtype('float32'))
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import ArrayLike

from voxprint.errors import DataError
from voxprint.fileio import write_temp

__all__ = ["load_embeddings", "save_embeddings"]

_SUFFIXES = (".npz", ".ark")
_LOAD_SUFFIXES = (".npz", ".ark", ".scp")


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


def _check_ids(ids: Sequence[str], where: str) -> None:
    bad = [i for i in ids if not isinstance(i, str) or not i or any(c.isspace() for c in i)]
    if bad:
        raise DataError(
            f"{where}: {len(bad)} id(s) are empty, not strings or contain whitespace "
            f"({_first(bad)}); ids must be single tokens such as utterance names"
        )
    uniq, counts = np.unique(np.asarray(ids, dtype=str), return_counts=True)
    if uniq.size != len(ids):
        dups = uniq[counts > 1].tolist()
        raise DataError(
            f"{where}: {len(dups)} id(s) occur more than once ({_first(dups)}); "
            "each id must name exactly one embedding"
        )


def _check_matrix(matrix: np.ndarray, n_ids: int, where: str) -> None:
    if matrix.ndim != 2:
        raise DataError(f"{where}: embeddings must be a 2-D (n, d) matrix, got shape {matrix.shape}")
    if matrix.shape[0] != n_ids:
        raise DataError(
            f"{where}: {n_ids} ids but {matrix.shape[0]} embedding rows; they must match one to one"
        )
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise DataError(f"{where}: no embeddings (shape {matrix.shape})")
    bad_rows = ~np.isfinite(matrix).all(axis=1)
    if bad_rows.any():
        rows = np.flatnonzero(bad_rows)
        raise DataError(
            f"{where}: {rows.size} embedding row(s) contain NaN or infinity "
            f"(first row {int(rows[0])}); refusing to use them"
        )


def save_embeddings(path: str | os.PathLike[str], ids: Sequence[str], matrix: ArrayLike) -> Path:
    """Write embeddings with their ids, atomically (see the module docstring for formats).

    Everything is validated before anything is written, so a rejected call never touches an
    existing file.

    Args:
        path: Output file ending in ``.npz`` or ``.ark`` (an ``.ark`` also gets an ``.scp`` beside
            it). Parent folders are created.
        ids: One unique, whitespace-free id per row.
        matrix: ``(n, d)`` finite embeddings; stored as float32.

    Returns:
        The written file (the ``.npz`` or the ``.ark``).

    Raises:
        DataError: On an unsupported suffix, bad or duplicate ids, a row-count mismatch or non-finite
            values.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(
            f"{out}: unsupported embedding file suffix {out.suffix!r}; use one of {', '.join(_SUFFIXES)}"
        )
    ids = list(ids)
    try:
        mat = np.asarray(matrix, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{out}: embeddings are not a numeric matrix ({exc})") from None
    _check_ids(ids, str(out))
    _check_matrix(mat, len(ids), str(out))
    mat = np.ascontiguousarray(mat)
    out.parent.mkdir(parents=True, exist_ok=True)

    if suffix == ".npz":
        id_array = np.asarray(ids, dtype=str)
        tmp = write_temp(out, lambda fh: np.savez(fh, ids=id_array, embeddings=mat))
        os.replace(tmp, out)
        return out

    import kaldiio

    scp_path = out.with_suffix(".scp")
    scp_buf = io.StringIO()
    # kaldiio computes the byte offsets; the scp it writes names the temporary ark, so it
    # goes to a buffer and is rewritten with the final path.
    ark_tmp = write_temp(
        out, lambda fh: kaldiio.save_ark(fh, {i: row for i, row in zip(ids, mat)}, scp=scp_buf)
    )
    try:
        ark_name = str(out.resolve())
        lines = []
        for line in scp_buf.getvalue().splitlines():
            key, location = line.split(" ", 1)
            lines.append(f"{key} {ark_name}:{location.rsplit(':', 1)[1]}\n")
        scp_text = "".join(lines).encode("utf-8")
        scp_tmp = write_temp(scp_path, lambda fh: fh.write(scp_text))
    except BaseException:
        ark_tmp.unlink(missing_ok=True)
        raise
    # Both files are complete before either is renamed, which keeps the window in which the
    # scp offsets could disagree with the ark as small as two renames.
    os.replace(ark_tmp, out)
    os.replace(scp_tmp, scp_path)
    return out


def _load_npz(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile... all mean "not ours"
        raise DataError(f"{path}: not a readable .npz embedding file ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: holds a single array, not an .npz archive with 'ids' and 'embeddings'"
        )
    with archive:
        keys = sorted(archive.files)
        if keys != ["embeddings", "ids"]:
            raise DataError(
                f"{path}: expected exactly the arrays 'ids' and 'embeddings', found "
                f"{', '.join(keys) or 'none'}; write it with voxprint.data.embeddings.save_embeddings"
            )
        try:
            id_array = archive["ids"]
            matrix = archive["embeddings"]
        except Exception as exc:  # pickled object arrays or a truncated member
            raise DataError(f"{path}: cannot read 'ids'/'embeddings' ({exc})") from None
    if id_array.ndim != 1 or id_array.dtype.kind not in "US":
        raise DataError(
            f"{path}: 'ids' must be a 1-D array of strings, got dtype {id_array.dtype} "
            f"and shape {id_array.shape}"
        )
    if id_array.dtype.kind == "S":
        try:
            id_array = np.char.decode(id_array, "utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: 'ids' are not UTF-8 text ({exc.reason})") from None
    if matrix.dtype.kind not in "fiu":
        raise DataError(f"{path}: 'embeddings' must be numeric, got dtype {matrix.dtype}")
    return id_array.tolist(), matrix.astype(np.float32, copy=False)


# Entry types kaldiio can store in an ark that are not embeddings; PKL in particular would
# be unpickled (arbitrary code execution), so these are refused before kaldiio sees them.
_FOREIGN_FLAGS = (b"PKL", b"NPY", b"RIFF", b"fLaC", b"AUDIO", b"\0B\4")


def _read_vector(fd: IO[bytes], key: str, where: Path) -> np.ndarray:
    """Read one Kaldi float vector/matrix (binary or text) at the current position."""
    from kaldiio.matio import read_ascii_mat, read_matrix_or_vector

    flag = fd.read(5)
    fd.seek(-len(flag), os.SEEK_CUR)
    if flag.startswith(_FOREIGN_FLAGS):
        raise DataError(
            f"{where}: entry {key!r} is not a Kaldi float vector or matrix (starts with {flag!r})"
        )
    arr = read_matrix_or_vector(fd) if flag.startswith(b"\0B") else read_ascii_mat(fd)
    arr = np.asarray(arr)
    # Some tools store each x-vector as a 1 x d matrix instead of a vector.
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise DataError(
            f"{where}: entry {key!r} has shape {arr.shape}; expected one embedding vector per id"
        )
    return arr


def _iter_ark(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    from kaldiio.matio import read_token

    with open(path, "rb") as fd:
        while (key := read_token(fd)) is not None:
            yield key, _read_vector(fd, key, path)


def _iter_scp(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    files: dict[Path, IO[bytes]] = {}
    try:
        with open(path, encoding="utf-8") as scp:
            for line_no, line in enumerate(scp, start=1):
                if not line.strip():
                    continue
                parts = line.split(None, 1)
                location = parts[1].strip() if len(parts) == 2 else ""
                ark, _, offset = location.rpartition(":")
                # Piped commands ("cmd |") would be run by a shell, and ranges ("[0:9]") are
                # for features, not embeddings: only plain "file:offset" is accepted.
                if not ark or not offset.isdigit() or "|" in location:
                    raise DataError(
                        f"{path}, line {line_no}: expected 'ID ARK_FILE:OFFSET', got {line.strip()!r}"
                    )
                ark_path = Path(ark)
                if not ark_path.is_absolute() and not ark_path.exists():
                    # Kaldi resolves relative paths from the working folder; falling back to
                    # the scp's folder lets a copied experiment folder still load.
                    ark_path = path.parent / ark_path
                if ark_path not in files:
                    if not ark_path.is_file():
                        raise DataError(f"{path}, line {line_no}: ark file not found: {ark}")
                    files[ark_path] = open(ark_path, "rb")
                fd = files[ark_path]
                fd.seek(int(offset))
                yield parts[0], _read_vector(fd, parts[0], ark_path)
    finally:
        for fd in files.values():
            fd.close()


def _load_kaldi(path: Path, suffix: str) -> tuple[list[str], np.ndarray]:
    ids: list[str] = []
    rows: list[np.ndarray] = []
    items = _iter_ark(path) if suffix == ".ark" else _iter_scp(path)
    try:
        for key, arr in items:
            if rows and arr.shape != rows[0].shape:
                raise DataError(
                    f"{path}: entry {key!r} has dimension {arr.shape[0]} but {ids[0]!r} has "
                    f"{rows[0].shape[0]}; all embeddings must have the same size"
                )
            ids.append(key)
            rows.append(arr)
    except DataError:
        raise
    except Exception as exc:  # kaldiio raises assorted errors on truncated or foreign files
        raise DataError(f"{path}: not a readable Kaldi {suffix} embedding file ({exc!r})") from None
    finally:
        items.close()
    if not rows:
        raise DataError(f"{path}: contains no embeddings")
    return ids, np.stack(rows).astype(np.float32, copy=False)


def load_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read embeddings written by :func:`save_embeddings` (or a Kaldi ark/scp).

    Args:
        path: An ``.npz``, ``.ark`` or ``.scp`` file.

    Returns:
        A tuple ``(ids, embeddings)``:

        - ``ids``: One id per row, in file order.
        - ``embeddings``: float32 matrix of shape ``(len(ids), d)``.

    Raises:
        DataError: If the file is missing or unreadable, has the wrong arrays, duplicate or malformed
            ids, a row-count mismatch, inconsistent dimensions or non-finite values.
    """
    src = Path(path)
    suffix = src.suffix.lower()
    if suffix not in _LOAD_SUFFIXES:
        raise DataError(
            f"{src}: unsupported embedding file suffix {src.suffix!r}; use one of "
            f"{', '.join(_LOAD_SUFFIXES)}"
        )
    if not src.is_file():
        raise DataError(f"embedding file not found: {src}")
    if suffix == ".npz":
        ids, matrix = _load_npz(src)
    else:
        ids, matrix = _load_kaldi(src, suffix)
    _check_ids(ids, str(src))
    _check_matrix(matrix, len(ids), str(src))
    return ids, matrix
