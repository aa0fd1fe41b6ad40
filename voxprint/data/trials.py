"""Trial lists: reading and writing them, making them, and the enrollment lists of multi-utterance models.

Trial list files:
    One trial per line, either ``LABEL ENROLL TEST`` (VoxCeleb style; label ``1``/``target`` for same
    speaker, ``0``/``nontarget`` otherwise) or unlabeled ``ENROLL TEST``; all lines of a file use the
    same form and blank lines are ignored (:func:`read_trials`). Reading is vectorised (no Python work
    per trial), so lists with millions of trials are read in about a second. Score files written by
    :func:`write_scores` have lines ``ENROLL TEST SCORE [LABEL]``.

Calibration trials:
    :func:`make_calibration_trials` draws target and non-target pairs from labelled (training)
    utterances, to fit score calibrations on.

Text-dependent ("pass-phrase") protocols:
    Built from a data folder with transcripts. A model is a (speaker, text) pair enrolled with a few
    utterances of that speaker saying that text, e.g. a speaker's digit password on the Free Spoken
    Digit Dataset. Its trials are:

    - target: another utterance of the same speaker saying the same text (label 1);
    - non-target: an utterance of ANOTHER speaker saying the SAME text (label 0). This is the
      text-dependent impostor case: the impostor knows the pass-phrase, so only the voice can reject
      him, which is what a speaker embedding is measured on;
    - optionally, "target-wrong" trials (:func:`make_wrong_text_trials`): the same speaker saying a
      DIFFERENT text, also label 0 in text-dependent verification but a different question (does the
      system hear the content?), so they are kept in a separate list and file.

    Test utterances are the utterances that enroll no model at all, so an enrollment utterance is
    never also a test utterance of any model, and targets and non-targets come from the same pool.

    Files: ``enroll.txt`` lines ``MODEL UTT1 UTT2 ...`` (:func:`read_enrollments`) and ``trials.txt``
    lines ``LABEL MODEL TEST`` (:func:`read_trials`).

Example:
    >>> from pathlib import Path
    >>> from voxprint.data.folder import DataFolder
    >>> utts = [f"{d}_{s}_{i}" for d in "01" for s in ("ann", "bob") for i in range(3)]
    >>> folder = DataFolder({u: Path(u) for u in utts}, {u: u.split("_")[1] for u in utts})
    >>> enrollments, trials = make_text_dependent_trials(folder, {u: u[0] for u in utts}, enroll_count=2)
    >>> sorted(enrollments)
    ['ann-0', 'ann-1', 'bob-0', 'bob-1']
    >>> [(label, folder.utt2spk[test]) for label, model, test in trials if model == "ann-0"]
    [(1, 'ann'), (0, 'bob')]
"""
from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from voxprint.data.folder import DataFolder
from voxprint.errors import DataError
from voxprint.fileio import atomic_write_text

__all__ = [
    "Trial",
    "Trials",
    "make_calibration_trials",
    "make_text_dependent_trials",
    "make_wrong_text_trials",
    "read_enrollments",
    "read_texts",
    "read_trials",
    "write_enrollment_trials",
    "write_scores",
]

TEXTS_FILE = "utterances.tsv"
ENROLL_FILE = "enroll.txt"
TRIALS_FILE = "trials.txt"
WRONG_TEXT_FILE = "trials_wrong_text.txt"

#: One trial of a text-dependent protocol before it is written: ``(label, model, test)``.
Trial = tuple[int, str, str]

# Whitespace for tokenising: what str.split() treats as whitespace within ASCII, i.e. the
# six usual ASCII spaces plus the information separators 0x1c-0x1f.
_SPACE_BYTES = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[list(_SPACE_BYTES)] = True
# bytes.split() ignores 0x1c-0x1f, so they are mapped to spaces first.
_SEPARATORS_TO_SPACE = bytes.maketrans(b"\x1c\x1d\x1e\x1f", b"    ")
_NEWLINE = ord("\n")


@dataclass(frozen=True, eq=False)
class Trials:
    """A trial list.

    Args:
        labels: int8 array, 1 for target and 0 for non-target trials; None for an unlabeled list.
        enroll: Enrollment ids (unicode strings), one per trial.
        test: Test ids (unicode strings), one per trial.
        path: The file the list was read from, if any (used in error messages).
    """

    labels: np.ndarray | None
    enroll: np.ndarray
    test: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        # Trials built by hand (not by read_trials) get the same shape guarantees.
        enroll, test = np.asarray(self.enroll), np.asarray(self.test)
        if enroll.ndim != 1 or enroll.shape != test.shape:
            raise DataError(
                f"enroll and test ids must be 1-D and of equal length, got shapes {enroll.shape} "
                f"and {test.shape}"
            )
        if self.labels is not None and np.shape(self.labels) != enroll.shape:
            raise DataError(f"{np.size(self.labels)} labels for {enroll.size} trials")
        object.__setattr__(self, "enroll", enroll)
        object.__setattr__(self, "test", test)
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))

    def __len__(self) -> int:
        return int(self.enroll.shape[0])

    @property
    def n_targets(self) -> int | None:
        """Number of target trials, or None for an unlabeled list."""
        return None if self.labels is None else int(np.count_nonzero(self.labels))


def read_trials(path: str | os.PathLike[str]) -> Trials:
    """Read a ``LABEL ENROLL TEST`` or ``ENROLL TEST`` trial list.

    The whole file is tokenised at once and the fields of every line are counted with NumPy,
    so no Python object is created per line (115k trials read in a few tens of ms).

    Args:
        path: The trial list (UTF-8 text). Labels may be ``0``/``1`` or ``nontarget``/``target``.

    Returns:
        The trials; ``labels`` is None when the lines have two fields.

    Raises:
        DataError: If the file is missing, empty, not UTF-8, mixes 2- and 3-field lines, has another
            number of fields, or has an unknown label; the message gives the line number.
    """
    src = Path(path)
    try:
        data = src.read_bytes()
    except FileNotFoundError:
        raise DataError(f"trial list not found: {src}") from None
    except OSError as exc:
        raise DataError(f"cannot read trial list {src}: {exc}") from None

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{src}, line {line}: not valid UTF-8 text ({exc.reason})") from None

    # Field counts per line, without a Python object per line: mark token starts in the
    # raw bytes and give each token the number of newlines before it as its line index.
    buf = np.frombuffer(data, dtype=np.uint8)
    is_space = _IS_SPACE[buf]
    token_start = ~is_space
    token_start[1:] &= is_space[:-1]
    starts = np.flatnonzero(token_start)
    if starts.size == 0:
        raise DataError(f"{src}: trial list is empty; expected lines 'LABEL ENROLL TEST' or 'ENROLL TEST'")
    token_line = np.searchsorted(np.flatnonzero(buf == _NEWLINE), starts)
    fields = np.bincount(token_line)
    used = np.flatnonzero(fields)
    n_fields = int(fields[used[0]])
    if n_fields not in (2, 3):
        raise DataError(
            f"{src}, line {used[0] + 1}: {n_fields} fields; expected 'LABEL ENROLL TEST' "
            "or 'ENROLL TEST'"
        )
    odd = used[fields[used] != n_fields]
    if odd.size:
        line = int(odd[0])
        raise DataError(
            f"{src}, line {line + 1}: {int(fields[line])} fields, but line {used[0] + 1} has "
            f"{n_fields}; every line must be 'LABEL ENROLL TEST' or every line 'ENROLL TEST'"
        )

    if text.isascii():
        # For ASCII text str.split() splits on exactly the bytes in _IS_SPACE.
        tokens = text.split()
    else:
        # str.split() would also split on Unicode spaces (e.g. U+00A0) that the byte mask
        # does not see, so split the bytes the same way as the mask and decode each token.
        tokens = [t.decode("utf-8") for t in data.translate(_SEPARATORS_TO_SPACE).split()]
    enroll = np.array(tokens[n_fields - 2 :: n_fields], dtype=str)
    test = np.array(tokens[n_fields - 1 :: n_fields], dtype=str)

    labels = None
    if n_fields == 3:
        # Labels are nearly always the single bytes "0"/"1": decide those straight from the
        # raw bytes; only other spellings ("target", "Nontarget", junk) look at the tokens.
        label_starts = starts[0::3]
        single = is_space[np.minimum(label_starts + 1, buf.size - 1)] | (label_starts + 1 == buf.size)
        first = buf[label_starts]
        target = single & (first == ord("1"))
        nontarget = single & (first == ord("0"))
        other = np.flatnonzero(~(target | nontarget))
        if other.size:
            words = np.array([tokens[3 * i] for i in other], dtype=str)
            folded = np.char.lower(words)
            target[other] = folded == "target"
            nontarget[other] = folded == "nontarget"
            bad = np.flatnonzero(~(target[other] | nontarget[other]))
            if bad.size:
                line = int(used[other[bad[0]]])
                raise DataError(
                    f"{src}, line {line + 1}: label {str(words[bad[0]])!r} is not 0/1 or "
                    f"target/nontarget ({bad.size} bad label(s) in total)"
                )
        labels = target.astype(np.int8)
    del tokens
    return Trials(labels=labels, enroll=enroll, test=test, path=src)


def trial_utterances(trials: Trials, enrollments: Mapping[str, Sequence[str]] | None = None,
                     available: Mapping[str, Any] | None = None) -> list[str]:
    """The utterances a trial list needs, sorted: its sides, and the utterances of the enrollment models
    it names; with ``available``, only those it holds (the others leave their trials unscored).

    Example:
        >>> trials = Trials(labels=None, enroll=np.array(["m", "a"]), test=np.array(["b", "c"]))
        >>> trial_utterances(trials, {"m": ["a", "d"]}, available={"a": 1, "b": 1, "c": 1})
        ['a', 'b', 'c']
    """
    models = enrollments or {}
    needed = {u for side in (trials.enroll.tolist(), trials.test.tolist()) for u in side if u not in models}
    needed |= {u for m in set(trials.enroll.tolist()) for u in models.get(m, ())}
    return sorted(u for u in needed if available is None or u in available)


def keep_trials_with(trials: Trials, available: set[str], tests: set[str] | None = None) -> tuple[Trials, int]:
    """The trials whose both sides are available, and how many were left out.

    Args:
        trials: the trial list.
        available: ids an enrollment side (and, without ``tests``, a test side) may name.
        tests: ids a test side may name (default: ``available``).

    Raises:
        DataError: no trial is left.

    Example:
        >>> trials = Trials(labels=None, enroll=np.array(["a", "a"]), test=np.array(["b", "c"]))
        >>> kept, missing = keep_trials_with(trials, {"a", "b"})
        >>> kept.test.tolist(), missing
        (['b'], 1)
    """
    tests = available if tests is None else tests
    keep = np.fromiter((e in available and t in tests for e, t in zip(trials.enroll, trials.test)),
                       dtype=bool, count=len(trials))
    if keep.all():
        return trials, 0
    if not keep.any():
        raise DataError(f"none of the {len(trials)} trials of {trials.path} has both sides available "
                        "(embedded, or with frames to score)")
    labels = trials.labels[keep] if trials.labels is not None else None
    return Trials(labels=labels, enroll=trials.enroll[keep], test=trials.test[keep], path=trials.path), \
        int((~keep).sum())


def write_scores(path: str | os.PathLike[str], trials: Trials, scores: ArrayLike) -> Path:
    """Write ``ENROLL TEST SCORE [LABEL]`` lines, atomically.

    The lines go to a temporary file in the same folder, which then replaces ``path``, so a
    reader never sees a partial score file. Scores are written with 6 decimals; the label
    column (0/1) is present only when the trials are labelled.

    Args:
        path: Output file; parent folders are created.
        trials: The scored trials.
        scores: One finite score per trial.

    Returns:
        The written file.

    Raises:
        DataError: If the number of scores differs from the number of trials or a score is non-finite.
    """
    out = Path(path)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size != len(trials):
        raise DataError(f"{out}: {s.size} scores for {len(trials)} trials; need one score per trial")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise DataError(
            f"{out}: {bad.size} scores are NaN or infinite (first for trial {int(bad[0]) + 1}: "
            f"{trials.enroll[bad[0]]} {trials.test[bad[0]]})"
        )
    columns = [trials.enroll.tolist(), trials.test.tolist(), s.tolist()]
    if trials.labels is None:
        text = "".join(f"{e} {t} {v:.6f}\n" for e, t, v in zip(*columns))
    else:
        text = "".join(
            f"{e} {t} {v:.6f} {lab}\n" for e, t, v, lab in zip(*columns, trials.labels.tolist())
        )
    return atomic_write_text(out, text)


def _pairs_from_ranges(lo: np.ndarray, hi: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode pair indices: pairs ``(i, j)`` with ``lo[i] <= j < hi[i]``, numbered i-major."""
    ends = np.cumsum(hi - lo)
    i = np.searchsorted(ends, picks, side="right")
    first = ends - (hi - lo)
    return i, lo[i] + (picks - first[i])


def make_calibration_trials(utt2spk: Mapping[str, str], max_trials: int = 100_000, seed: int = 0) -> Trials:
    """Target and non-target trials drawn from labelled (training) utterances.

    Half of ``max_trials`` are targets (two different utterances of one speaker) and half
    non-targets (utterances of two different speakers); when there are fewer possible target
    pairs than that, all of them are used and the rest are non-targets. Pairs are drawn
    uniformly without replacement among all unordered pairs of their kind, so no pair
    occurs twice and no utterance is paired with itself. The result depends only on the
    mapping's contents and ``seed`` (not on its order) and is sorted by enrollment id.

    Args:
        utt2spk: Utterance id -> speaker id (e.g. ``DataFolder.utt2spk``).
        max_trials: Number of trials wanted (>= 2); fewer are returned when fewer pairs exist.
        seed: Seed of the random draw.

    Returns:
        Labelled trials (``1`` target, ``0`` non-target) over the utterance ids.

    Raises:
        DataError: If there are fewer than two speakers, no speaker has two utterances, or
            ``max_trials`` is not an integer >= 2.
    """
    if isinstance(max_trials, bool) or not isinstance(max_trials, (int, np.integer)) or max_trials < 2:
        raise DataError(f"max_trials must be an integer >= 2, got {max_trials!r}")
    utts = np.array(sorted(utt2spk), dtype=str)
    spk_names, spk = np.unique(np.array([utt2spk[u] for u in utts.tolist()], dtype=str), return_inverse=True)
    if spk_names.size < 2:
        raise DataError(
            f"calibration trials need utterances of at least two speakers, got {spk_names.size}"
        )
    order = np.lexsort((utts, spk))
    utts, spk = utts[order], spk[order]
    counts = np.bincount(spk)
    if counts.max() < 2:
        raise DataError("calibration trials need a speaker with at least two utterances for target pairs")
    # In speaker-sorted order, utterance i's target partners are the later utterances of its
    # speaker and its non-target partners every utterance of a later speaker.
    spk_end = np.cumsum(counts)[spk]
    idx = np.arange(utts.size)
    rng = np.random.default_rng(seed)
    n_possible = {1: int((spk_end - idx - 1).sum()), 0: int((utts.size - spk_end).sum())}
    want = {1: min(-(-int(max_trials) // 2), n_possible[1])}
    want[0] = min(int(max_trials) - want[1], n_possible[0])
    ranges = {1: (idx + 1, spk_end), 0: (spk_end, np.full(utts.size, utts.size))}
    enroll, test, labels = [], [], []
    for label in (1, 0):
        picks = np.sort(rng.choice(n_possible[label], size=want[label], replace=False))
        i, j = _pairs_from_ranges(*ranges[label], picks)
        enroll.append(i)
        test.append(j)
        labels.append(np.full(i.size, label, dtype=np.int8))
    e, t, lab = np.concatenate(enroll), np.concatenate(test), np.concatenate(labels)
    by_enroll = np.lexsort((utts[t], utts[e]))
    return Trials(labels=lab[by_enroll], enroll=utts[e][by_enroll], test=utts[t][by_enroll])


def read_texts(folder_path: str | os.PathLike) -> dict[str, str]:
    """Utterance id -> transcript, from the ``utterances.tsv`` of a data folder.

    The file is tab-separated with a header line naming at least the columns ``utt`` and
    ``text`` (the shared data sets also have ``speaker``, ``path`` and ``seconds``).

    Args:
        folder_path: The data folder holding ``utterances.tsv``.

    Returns:
        Transcript of each utterance, stripped of surrounding white space.

    Raises:
        DataError: If the file is missing, lacks a column, has a short line, an empty text or a duplicate utterance.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp())
        >>> _ = (tmp / "utterances.tsv").write_text("utt\\tspeaker\\ttext\\na1\\tann\\tseven\\n")
        >>> read_texts(tmp)
        {'a1': 'seven'}
    """
    path = Path(folder_path) / TEXTS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; a text-dependent protocol needs each utterance's text")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    header = lines[0].split("\t") if lines else []
    if "utt" not in header or "text" not in header:
        raise DataError(f"{path}: the header line must name the columns 'utt' and 'text', got {header!r}")
    utt_col, text_col = header.index("utt"), header.index("text")
    texts: dict[str, str] = {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(f"{path}:{number}: {len(fields)} tab-separated fields, the header has {len(header)}")
        utt, text = fields[utt_col].strip(), fields[text_col].strip()
        if not text:
            raise DataError(f"{path}:{number}: utterance {utt!r} has an empty text")
        if utt in texts:
            raise DataError(f"{path}:{number}: duplicate utterance {utt!r}")
        texts[utt] = text
    return texts


def _model_id(speaker: str, text: str) -> str:
    # Model ids go into whitespace-separated files, so the text's words are joined with "_".
    model = f"{speaker}-{'_'.join(text.split())}"
    if any(ch.isspace() for ch in model):
        raise DataError(f"speaker id {speaker!r} contains white space; it cannot name a model")
    return model


def _group_by_speaker_and_text(folder: DataFolder, texts: Mapping[str, str]) -> dict[tuple[str, str], list[str]]:
    missing = [utt for utt in folder.utterances if utt not in texts]
    if missing:
        raise DataError(
            f"{len(missing)} utterances of the data folder have no text (first: {missing[0]!r}); "
            f"give every utterance a text in {TEXTS_FILE}"
        )
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for utt in folder.utterances:  # sorted, so each group is sorted
        groups[(folder.utt2spk[utt], texts[utt])].append(utt)
    return dict(sorted(groups.items()))


def _check_cap(tests_per_model: int | None) -> None:
    if tests_per_model is not None and tests_per_model < 1:
        raise DataError(f"tests_per_model must be at least 1 (or None for all), got {tests_per_model}")


def _pick(pool: Sequence[str], count: int | None, rng: random.Random) -> list[str]:
    if count is None or count >= len(pool):
        return list(pool)
    return sorted(rng.sample(list(pool), count))


def _pick_balanced(pools: Iterable[Sequence[str]], count: int | None, rng: random.Random) -> list[str]:
    """Up to ``count`` utterances taken in turn from each pool, so no pool (speaker) dominates."""
    shuffled = []
    for pool in pools:
        items = list(pool)
        rng.shuffle(items)
        shuffled.append(items)
    if count is None:
        return sorted(u for items in shuffled for u in items)
    interleaved = [items[i] for i in range(max(map(len, shuffled), default=0))
                   for items in shuffled if i < len(items)]
    return sorted(interleaved[:count])


def make_text_dependent_trials(
    folder: DataFolder,
    texts: Mapping[str, str],
    enroll_count: int = 3,
    tests_per_model: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, list[str]], list[Trial]]:
    """Enrollments and trials of a text-dependent protocol (see the module docstring).

    Each (speaker, text) pair with more than ``enroll_count`` utterances becomes the model
    ``SPEAKER-TEXT`` (the text's words joined by ``_``), enrolled with ``enroll_count`` of them
    drawn at random. Every random draw is seeded from ``seed`` and the model id, so the protocol
    depends only on the folder, the texts and the arguments, and one model's draw does not
    change when other speakers are added.

    Args:
        folder: The utterances and their speakers.
        texts: Text of every utterance of ``folder`` (e.g. from :func:`read_texts`).
        enroll_count: Enrollment utterances per model.
        tests_per_model: At most this many target and at most this many non-target trials per model (non-targets
            drawn in turn from each impostor speaker); None keeps every eligible test utterance.
        seed: Seed of the random draws.

    Returns:
        A tuple ``(enrollments, trials)``:

        - ``enrollments``: Model id -> its sorted enrollment utterances, sorted by model id.
        - ``trials``: ``(label, model, test)``, grouped by model (targets first), test ids sorted.

    Raises:
        DataError: If an utterance has no text, an argument is out of range, or no (speaker, text) pair has
            enough utterances for a model and a target trial.
    """
    if enroll_count < 1:
        raise DataError(f"enroll_count must be at least 1, got {enroll_count}")
    _check_cap(tests_per_model)
    groups = _group_by_speaker_and_text(folder, texts)

    enrollments: dict[str, list[str]] = {}
    model_key: dict[str, tuple[str, str]] = {}
    for (speaker, text), utts in groups.items():
        if len(utts) <= enroll_count:
            continue  # no utterance would be left for a target trial
        model = _model_id(speaker, text)
        if model in enrollments:
            raise DataError(
                f"two (speaker, text) pairs give the model id {model!r}; make the texts differ in more than spacing"
            )
        rng = random.Random(f"{seed}/{model}/enroll")
        enrollments[model] = sorted(rng.sample(utts, enroll_count))
        model_key[model] = (speaker, text)
    if not enrollments:
        raise DataError(
            f"no speaker has more than {enroll_count} utterances of one text; "
            "lower enroll_count or give each speaker repeated texts"
        )

    enrolled = {utt for utts in enrollments.values() for utt in utts}
    test_pool = {key: [u for u in utts if u not in enrolled] for key, utts in groups.items()}
    speakers_of_text: dict[str, list[str]] = defaultdict(list)
    for speaker, text in groups:
        speakers_of_text[text].append(speaker)

    trials: list[Trial] = []
    for model, (speaker, text) in model_key.items():
        rng = random.Random(f"{seed}/{model}/test")
        targets = _pick(test_pool[(speaker, text)], tests_per_model, rng)
        impostors = [test_pool[(other, text)] for other in speakers_of_text[text] if other != speaker]
        nontargets = _pick_balanced(impostors, tests_per_model, rng)
        trials.extend((1, model, utt) for utt in targets)
        trials.extend((0, model, utt) for utt in nontargets)
    return enrollments, trials


def make_wrong_text_trials(
    folder: DataFolder,
    texts: Mapping[str, str],
    enrollments: Mapping[str, Sequence[str]],
    tests_per_model: int | None = None,
    seed: int = 0,
) -> list[Trial]:
    """Same-speaker, different-text ("target-wrong") trials for the models of ``enrollments``.

    Each model is tested with utterances of its own speaker saying another text, labelled 0 (a
    text-dependent system should reject them). Test utterances exclude every enrollment
    utterance, as in :func:`make_text_dependent_trials`; with ``tests_per_model`` they are drawn
    in turn from each other text.

    Args:
        folder: The utterances and their speakers.
        texts: Text of every utterance of ``folder``.
        enrollments: Model id -> enrollment utterances (all of one speaker and one text).
        tests_per_model: At most this many trials per model; None keeps all.
        seed: Seed of the random draws.

    Returns:
        ``(0, model, test)``, grouped by model in sorted order, test ids sorted.

    Raises:
        DataError: If an enrollment utterance is unknown or a model mixes speakers or texts.
    """
    _check_cap(tests_per_model)
    groups = _group_by_speaker_and_text(folder, texts)
    enrolled = {utt for utts in enrollments.values() for utt in utts}
    trials: list[Trial] = []
    for model in sorted(enrollments):
        unknown = [u for u in enrollments[model] if u not in folder.utt2spk]
        if unknown:
            raise DataError(f"model {model!r} is enrolled with {unknown[0]!r}, which is not in the data folder")
        keys = {(folder.utt2spk[u], texts[u]) for u in enrollments[model]}
        if len(keys) != 1:
            raise DataError(f"model {model!r} mixes speakers or texts in its enrollment: {sorted(keys)}")
        speaker, text = keys.pop()
        pools = [[u for u in utts if u not in enrolled]
                 for (spk, other_text), utts in groups.items() if spk == speaker and other_text != text]
        rng = random.Random(f"{seed}/{model}/wrong-text")
        trials.extend((0, model, utt) for utt in _pick_balanced(pools, tests_per_model, rng))
    return trials


def _check_ids(kind: str, ids: Iterable[str]) -> None:
    for value in ids:
        if not value or any(ch.isspace() for ch in value):
            raise DataError(f"{kind} id {value!r} is empty or contains white space; it cannot be written")


def _trial_lines(trials: Sequence[Trial], enrollments: Mapping[str, Sequence[str]], name: str) -> str:
    if not trials:
        raise DataError(f"no trials to write to {name}")
    lines = []
    for label, model, test in trials:
        if label not in (0, 1):
            raise DataError(f"{name}: trial label must be 0 or 1, got {label!r} ({model} {test})")
        if model not in enrollments:
            raise DataError(f"{name}: trial model {model!r} has no enrollment")
        lines.append(f"{label} {model} {test}\n")
    _check_ids("test utterance", (t for _, _, t in trials))
    return "".join(lines)


def write_enrollment_trials(
    out_dir: str | os.PathLike,
    enrollments: Mapping[str, Sequence[str]],
    trials: Sequence[Trial],
    wrong_text_trials: Sequence[Trial] | None = None,
) -> Path:
    """Write ``enroll.txt`` and ``trials.txt`` (and ``trials_wrong_text.txt`` if given), each atomically.

    Args:
        out_dir: Output folder, created if needed.
        enrollments: Model id -> enrollment utterances; written sorted by model id.
        trials: ``(label, model, test)`` lines of ``trials.txt``, in the given order.
        wrong_text_trials: Lines of ``trials_wrong_text.txt``.

    Returns:
        ``out_dir``.

    Raises:
        DataError: If a model has no utterances, an id contains white space, a label is not 0/1, a trial
            names a model without enrollment, or a trial list is empty.

    Example:
        >>> import tempfile
        >>> out = write_enrollment_trials(tempfile.mkdtemp(), {"ann-7": ["u1", "u2"]}, [(1, "ann-7", "u3")])
        >>> (out / "enroll.txt").read_text(), (out / "trials.txt").read_text()
        ('ann-7 u1 u2\\n', '1 ann-7 u3\\n')
    """
    out = Path(out_dir)
    if not enrollments:
        raise DataError("no enrollments to write")
    _check_ids("model", enrollments)
    for model, utts in enrollments.items():
        if not utts:
            raise DataError(f"model {model!r} has no enrollment utterances")
        _check_ids("enrollment utterance", utts)
    # Render everything before writing anything, so a bad trial list leaves no partial protocol.
    files = {
        ENROLL_FILE: "".join(f"{model} {' '.join(enrollments[model])}\n" for model in sorted(enrollments)),
        TRIALS_FILE: _trial_lines(trials, enrollments, TRIALS_FILE),
    }
    if wrong_text_trials is not None:
        files[WRONG_TEXT_FILE] = _trial_lines(wrong_text_trials, enrollments, WRONG_TEXT_FILE)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return out


def read_enrollments(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read an ``enroll.txt``: one model per line, ``MODEL UTT1 UTT2 ...``.

    Args:
        path: The file; blank lines are ignored.

    Returns:
        Model id -> enrollment utterances, in file order.

    Raises:
        DataError: If the file is missing, a line has no utterance, or a model or an utterance of one model repeats.
    """
    src = Path(path)
    if not src.is_file():
        raise DataError(f"enrollment list not found: {src}")
    enrollments: dict[str, list[str]] = {}
    with open(src, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            model, utts = fields[0], fields[1:]
            if not utts:
                raise DataError(
                    f"{src}:{number}: model {model!r} has no enrollment utterances; expected 'MODEL UTT1 UTT2 ...'"
                )
            if model in enrollments:
                raise DataError(f"{src}:{number}: model {model!r} is listed twice")
            if len(set(utts)) != len(utts):
                raise DataError(f"{src}:{number}: model {model!r} lists an utterance twice")
            enrollments[model] = utts
    if not enrollments:
        raise DataError(f"{src}: enrollment list is empty; expected lines 'MODEL UTT1 UTT2 ...'")
    return enrollments
