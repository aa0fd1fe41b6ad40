"""Verbs on data folders: ``prepare`` and ``clean``."""
from __future__ import annotations

import argparse

from voxprint.cli.core import (
    EXIT_OK,
    check_writable_folder,
    emit,
    json_option,
    load_cli_model,
    model_options,
    on_error_option,
    quiet_option,
    rate,
    report_skipped,
    verb,
)


def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio_root", help="folder holding SPEAKER/UTTERANCE.wav (or .flac, .ogg, .mp3)")
    p.add_argument("--out", help="output data folder (default: the audio folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing wav.scp/utt2spk/spk2utt in the output folder")
    json_option(p)


@verb("prepare", "build wav.scp/utt2spk from a SPEAKER/UTTERANCE.wav tree",
      "voxprint prepare ~/audio/speakers --out data/mine", _prepare_args)
def _prepare(args: argparse.Namespace) -> int:
    from voxprint.data import prepare_data_folder

    if args.out:
        check_writable_folder(args.out, "--out")
    folder = prepare_data_folder(args.audio_root, args.out, overwrite=args.overwrite)
    emit(args, {"folder": str(folder.root), "utterances": len(folder), "speakers": len(folder.speakers)},
         f"wrote {folder.root}: {len(folder)} utterances, {len(folder.speakers)} speakers")
    return EXIT_OK



def _clean_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder to clean (wav.scp and utt2spk)")
    p.add_argument("--out", required=True, help="cleaned data folder (wav.scp, utt2spk, spk2utt, report.tsv)")
    model_options(p)
    p.add_argument("--majority", type=rate, default=0.6,
                   help="the larger group must hold more than this fraction of a speaker's utterances")
    p.add_argument("--silhouette", type=float, default=0.3, help="the split's cosine silhouette must exceed this")
    on_error_option(p)
    quiet_option(p)
    json_option(p)


@verb("clean", "drop utterances filed under the wrong speaker (K=2 spherical k-means)",
      "voxprint clean --data data/train --out data/train_clean", _clean_args)
def _clean(args: argparse.Namespace) -> int:
    from voxprint.data.cleaning import REPORT_NAME, clean_data_folder
    from voxprint.data import read_data_folder

    check_writable_folder(args.out, "--out")
    folder = read_data_folder(args.data)
    out, report = clean_data_folder(folder, load_cli_model(args), args.out, majority=args.majority,
                                    silhouette=args.silhouette, progress=not args.quiet,
                                    on_error=args.on_error)
    report_skipped(report.skipped)
    emit(args, {"out": str(out), "removed": sorted(report.removed), "utterances": len(folder),
                "cleaned_speakers": report.cleaned_speakers, "skipped": report.skipped},
         f"removed {len(report.removed)} of {len(folder)} utterances from {len(report.cleaned_speakers)} of "
         f"{len(folder.speakers)} speakers; wrote {out} (decisions in {out / REPORT_NAME})"
         + (f"; {len(report.skipped)} recordings skipped" if report.skipped else ""))
    return EXIT_OK
