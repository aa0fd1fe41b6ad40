#!/usr/bin/env python
"""Digit-password (text-dependent) verification protocol on the Free Spoken Digit Dataset.

    python recipes/orthogonal/make_fsdd_trials.py --out exp/fsdd_td [--enroll-count 3] [--seed 0]

Reads ``${VOXPRINT_DATA}/fsdd`` (``wav.scp``, ``utt2spk``, ``utterances.tsv``) and writes into
``--out``: ``enroll.txt`` (one model per speaker and digit, ``MODEL UTT1 UTT2 ...``),
``trials.txt`` (``LABEL MODEL TEST``: targets are the same speaker saying the same digit,
non-targets other speakers saying the same digit) and, with ``--wrong-text``,
``trials_wrong_text.txt`` (the same speaker saying another digit, label 0). The protocol is
a function of the data and the arguments only (seeded), so reruns give identical files.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from voxprint.data.folder import read_data_folder
from voxprint.data.trials import (
    make_text_dependent_trials,
    make_wrong_text_trials,
    read_texts,
    write_enrollment_trials,
)
from voxprint.errors import VoxprintError
from voxprint.paths import data_root


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder for enroll.txt and trials.txt")
    parser.add_argument("--enroll-count", type=int, default=3, help="enrollment utterances per model (default 3)")
    parser.add_argument("--tests-per-model", type=int, default=None,
                        help="at most this many target and non-target trials per model (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the enrollment and test draws (default 0)")
    parser.add_argument("--wrong-text", action="store_true",
                        help="also write trials_wrong_text.txt (same speaker, another digit, label 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    source = data_root() / "fsdd"
    try:
        folder = read_data_folder(source)
        texts = read_texts(source)
        enrollments, trials = make_text_dependent_trials(
            folder, texts, enroll_count=args.enroll_count, tests_per_model=args.tests_per_model, seed=args.seed
        )
        wrong = (make_wrong_text_trials(folder, texts, enrollments, args.tests_per_model, args.seed)
                 if args.wrong_text else None)
        out = write_enrollment_trials(args.out, enrollments, trials, wrong)
    except VoxprintError as exc:
        print(f"make_fsdd_trials: error: {exc}", file=sys.stderr)
        return 1
    targets = sum(label for label, _, _ in trials)
    print(f"{len(enrollments)} models, {targets} target trials, {len(trials) - targets} non-target trials"
          + (f", {len(wrong)} wrong-text trials" if wrong is not None else "") + f" -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
