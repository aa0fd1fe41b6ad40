"""Kaldi-style data folders: ``wav.scp`` (utt -> audio path) and ``utt2spk`` (utt -> speaker).

Paths in ``wav.scp`` may be absolute or relative to the folder. Only plain file paths are supported
(Kaldi pipe commands such as ``sox ... |`` are rejected with a clear message).
"""
from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from voxprint.errors import DataError
from voxprint.fileio import atomic_write_text

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def _read_two_columns(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path} not found; a data folder needs wav.scp and utt2spk")
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DataError(f"{path}:{number}: expected 'KEY VALUE', got {line!r}")
            key, value = parts
            if key in table:
                raise DataError(f"{path}:{number}: duplicate key {key!r}")
            table[key] = value.strip()
    return table


@dataclass
class DataFolder:
    """Utterances with their audio paths and speakers.

    Attributes:
        root: the folder (None for folders built in memory).
        wav: utterance id -> absolute audio path.
        utt2spk: utterance id -> speaker id.
    """

    wav: dict[str, Path]
    utt2spk: dict[str, str]
    root: Path | None = None
    spk2utt: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        missing = [utt for utt in self.wav if utt not in self.utt2spk]
        if missing:
            raise DataError(
                f"{len(missing)} utterances of wav.scp have no speaker in utt2spk (first: {missing[0]!r})"
            )
        spk2utt: dict[str, list[str]] = defaultdict(list)
        for utt in sorted(self.wav):
            spk2utt[self.utt2spk[utt]].append(utt)
        self.spk2utt = dict(sorted(spk2utt.items()))

    @property
    def utterances(self) -> list[str]:
        return sorted(self.wav)

    @property
    def speakers(self) -> list[str]:
        return list(self.spk2utt)

    def __len__(self) -> int:
        return len(self.wav)

    def subset(self, speakers: list[str]) -> "DataFolder":
        """The utterances of the given speakers only."""
        keep = set(speakers)
        wav = {utt: path for utt, path in self.wav.items() if self.utt2spk[utt] in keep}
        return DataFolder(wav=wav, utt2spk={utt: self.utt2spk[utt] for utt in wav}, root=self.root)

    def split_validation(self, fraction: float, seed: int = 0, min_per_speaker: int = 2) -> tuple["DataFolder", "DataFolder"]:
        """Hold out a fraction of each speaker's utterances for validation.

        Holding out utterances (not speakers) keeps every speaker in both parts, so the GE2E
        validation loss is computed on the same N-speaker task the model trains on.
        Speakers with too few utterances stay entirely in training.
        """
        rng = random.Random(seed)
        train_wav: dict[str, Path] = {}
        valid_wav: dict[str, Path] = {}
        for utts in self.spk2utt.values():
            shuffled = list(utts)
            rng.shuffle(shuffled)
            count = int(round(fraction * len(shuffled)))
            if len(shuffled) - count < min_per_speaker or count < min_per_speaker:
                count = 0
            for i, utt in enumerate(shuffled):
                (valid_wav if i < count else train_wav)[utt] = self.wav[utt]
        train = DataFolder(train_wav, {u: self.utt2spk[u] for u in train_wav}, self.root)
        valid = DataFolder(valid_wav, {u: self.utt2spk[u] for u in valid_wav}, self.root)
        return train, valid


def read_data_folder(folder: str | os.PathLike, require_speakers: bool = True) -> DataFolder:
    """Read ``wav.scp`` and ``utt2spk`` from a Kaldi-style data folder.

    Args:
        folder: the data folder.
        require_speakers: when False, a folder with only ``wav.scp`` is read too (each utterance is
            then its own speaker), which is all embedding needs.

    Raises:
        DataError: the folder or a file is missing, a line is malformed, an audio path does not exist.
    """
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    scp = _read_two_columns(root / "wav.scp")
    wav: dict[str, Path] = {}
    for utt, value in scp.items():
        if value.endswith("|"):
            raise DataError(f"{root / 'wav.scp'}: utterance {utt!r} uses a pipe command; give a file path")
        path = Path(value)
        path = path if path.is_absolute() else root / path
        wav[utt] = path
    missing = [str(p) for p in wav.values() if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} audio files listed in {root / 'wav.scp'} do not exist (first: {missing[0]})")
    if not require_speakers and not (root / "utt2spk").is_file():
        return DataFolder(wav=wav, utt2spk={utt: utt for utt in wav}, root=root)
    utt2spk = _read_two_columns(root / "utt2spk")
    return DataFolder(wav=wav, utt2spk=utt2spk, root=root)


FOLDER_FILES = ("wav.scp", "utt2spk", "spk2utt")


def prepare_data_folder(audio_root: str | os.PathLike, out: str | os.PathLike | None = None,
                        overwrite: bool = False) -> DataFolder:
    """Build a data folder from a ``speaker/utterance.wav`` tree (``voxprint prepare``).

    The speaker is the first folder under ``audio_root``; deeper folders (e.g. VoxCeleb's
    ``speaker/video/utt.wav``) are folded into the utterance id. Writes ``wav.scp``, ``utt2spk``
    and ``spk2utt`` into ``out`` (default: ``audio_root``) with paths relative to ``out`` when possible.

    Raises:
        DataError: the tree is not ``SPEAKER/UTTERANCE.wav``, or ``out`` already holds a data folder
            and ``overwrite`` is False (its ids may be what a trial list beside it refers to).
    """
    audio_root = Path(audio_root).expanduser().resolve()
    if not audio_root.is_dir():
        raise DataError(f"audio folder {audio_root} does not exist")
    out_dir = Path(out).expanduser().resolve() if out else audio_root
    existing = [name for name in FOLDER_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise DataError(f"{out_dir} already holds {', '.join(existing)}; choose another --out, or pass --overwrite "
                        "to replace them (trial lists that use the old utterance ids will no longer match)")
    files = sorted(p for p in audio_root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    wav: dict[str, Path] = {}
    utt2spk: dict[str, str] = {}
    for path in files:
        rel = path.relative_to(audio_root)
        if len(rel.parts) < 2:
            raise DataError(f"{path} is not inside a speaker folder; expected {audio_root}/SPEAKER/UTTERANCE.wav")
        speaker = rel.parts[0]
        utt = "-".join(rel.with_suffix("").parts)
        if " " in utt:
            raise DataError(f"{path}: utterance ids may not contain spaces")
        wav[utt] = path
        utt2spk[utt] = speaker
    if not wav:
        raise DataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found under {audio_root}")
    folder = DataFolder(wav=wav, utt2spk=utt2spk, root=out_dir)
    write_data_folder(folder, out_dir)
    return folder


def write_data_folder(folder: DataFolder, out: str | os.PathLike) -> Path:
    """Write ``wav.scp``, ``utt2spk`` and ``spk2utt`` (atomically, each file)."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def display(path: Path) -> str:
        try:
            return os.path.relpath(path, out_dir)
        except ValueError:
            return str(path)

    tables = {
        "wav.scp": [f"{utt} {display(folder.wav[utt])}" for utt in folder.utterances],
        "utt2spk": [f"{utt} {folder.utt2spk[utt]}" for utt in folder.utterances],
        "spk2utt": [f"{spk} {' '.join(utts)}" for spk, utts in folder.spk2utt.items()],
    }
    for name, lines in tables.items():
        atomic_write_text(out_dir / name, "\n".join(lines) + "\n")
    return out_dir
