"""Verbs of the speaker store: ``enroll``, ``identify``, ``speakers`` and ``store`` (re-embedding)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxprint.cli.core import (
    EXIT_OK,
    emit,
    json_option,
    load_cli_embedder,
    load_cli_model,
    model_options,
    names_standalone_export,
    on_error_option,
    positive_int,
    quiet_option,
    report_skipped,
    verb,
)
from voxprint.errors import AudioError, VoxprintError


def store_option(p: argparse.ArgumentParser, must_exist: bool = False) -> None:
    """Add ``--store``."""
    p.add_argument("--store", required=True,
                   help="speaker store file (SQLite)" + ("" if must_exist else "; created when missing"))


def open_store(args: argparse.Namespace, create: bool = False, keep_audio: bool = False,
               loader: Callable[[argparse.Namespace], Any] = load_cli_embedder):
    """The store of ``--store`` with the model of ``--model`` (refused when the store holds another model's).

    ``loader`` loads the model: by default an ONNX export is run by the torch-free embedder
    (:func:`~voxprint.cli.core.load_cli_embedder`); verbs that need the whole
    :class:`~voxprint.inference.SpeakerModel` (diarization, spot) pass :func:`~voxprint.cli.core.load_cli_model`.
    """
    from voxprint.store import SpeakerStore

    return SpeakerStore(args.store, loader(args), keep_audio=keep_audio, create=create)


def _enroll_args(p: argparse.ArgumentParser) -> None:
    store_option(p)
    p.add_argument("files", nargs="*", help="enrollment recordings of --speaker")
    p.add_argument("--speaker", help="the speaker's id (letters, digits, _.@+-)")
    p.add_argument("--name", help="display name (default: the id)")
    p.add_argument("--data", help="enroll every speaker of a data folder's utt2spk from its utterances")
    p.add_argument("--keep-audio", action="store_true",
                   help="keep the audio (16 kHz FLAC) so `voxprint store reembed` can move the store to another model")
    model_options(p, from_store=True)
    on_error_option(p)
    quiet_option(p)
    json_option(p)


@verb("enroll", "enroll speakers into a speaker store (idempotent: recordings already enrolled are skipped)",
      "voxprint enroll --store speakers.db --speaker alice a1.flac a2.flac", _enroll_args,
      torch_free=names_standalone_export)
def _enroll(args: argparse.Namespace) -> int:
    if bool(args.data) == bool(args.files or args.speaker):
        raise VoxprintError("give either --speaker ID with recordings, or --data DIR")
    if args.files and not args.speaker or args.speaker and not args.files:
        raise VoxprintError("--speaker needs at least one recording, and recordings need --speaker")
    store = open_store(args, create=True, keep_audio=args.keep_audio)
    if args.speaker:
        record = store.enroll(args.speaker, args.files, name=args.name)
        emit(args, record.to_dict(), f"enrolled {record.id}: {record.count} recordings, {record.seconds:.1f} s of speech")
        return EXIT_OK
    from tqdm import tqdm

    from voxprint.data import read_data_folder

    folder = read_data_folder(args.data)
    if args.on_error == "fail":
        store.model.check_files(folder.wav, str(folder.root))
    skipped: dict[str, str] = {}
    for speaker in tqdm(folder.speakers, desc="enrolling", unit="speaker", disable=args.quiet):
        utterances = folder.spk2utt[speaker]
        try:
            record = store.enroll(speaker, [folder.wav[u] for u in utterances], sources=utterances)
        except AudioError as exc:
            if args.on_error == "fail":
                raise
            skipped[speaker] = str(exc)
            continue
        # One line per committed speaker: what a killed run had acknowledged.
        emit(args, record.to_dict(), f"enrolled {record.id}: {record.count} recordings")
    report_skipped(skipped)
    return EXIT_OK


def _identify_args(p: argparse.ArgumentParser) -> None:
    store_option(p, must_exist=True)
    p.add_argument("files", nargs="*", help="recordings to identify")
    p.add_argument("--data", help="identify every utterance of a data folder (wav.scp)")
    p.add_argument("--top-k", type=positive_int, default=5, help="candidates to report (default: %(default)s)")
    model_options(p, from_store=True)
    on_error_option(p)
    quiet_option(p)
    json_option(p)


@verb("identify", "who is speaking: the best enrolled speaker, or null (unknown) when nobody enrolled matches",
      "voxprint identify --store speakers.db call.flac --json", _identify_args,
      torch_free=names_standalone_export)
def _identify(args: argparse.Namespace) -> int:
    if bool(args.files) == bool(args.data):
        raise VoxprintError("give either recordings or --data DIR")
    store = open_store(args)
    if args.data:
        from voxprint.data import read_data_folder

        folder = read_data_folder(args.data, require_speakers=False)
        items = [("utt", u, folder.wav[u]) for u in folder.utterances]
    else:
        items = [("file", f, f) for f in args.files]
    if args.on_error == "fail":
        store.model.check_files({name: path for _, name, path in items}, "the input")
    skipped: dict[str, str] = {}
    for key, name, path in items:
        try:
            result = store.identify(path, top_k=args.top_k)
        except AudioError as exc:
            if args.on_error == "fail":
                raise
            skipped[name] = str(exc)
            continue
        who = result.speaker if result.speaker is not None else "unknown"
        emit(args, {key: name, **result.to_dict()},
             f"{name}\t{who}\t{result.score:.3f}\t" + " ".join(f"{c.speaker}:{c.score:.2f}" for c in result.top))
    report_skipped(skipped)
    return EXIT_OK


def _speakers_args(p: argparse.ArgumentParser) -> None:
    store_option(p, must_exist=True)
    p.add_argument("action", choices=["list", "show", "remove", "rename"], help="what to do")
    p.add_argument("speaker", nargs="?", help="the speaker id (show, remove, rename)")
    p.add_argument("new_id", nargs="?", help="the new id (rename)")
    p.add_argument("--name", help="new display name (rename)")
    json_option(p)


@verb("speakers", "list, show, remove or rename the speakers of a store",
      "voxprint speakers --store speakers.db rename spk1 alice --name 'Alice B.'", _speakers_args)
def _speakers(args: argparse.Namespace) -> int:
    from voxprint.store import EmbeddingTable

    table = EmbeddingTable(args.store, create=False)
    if args.action == "list":
        for record in table.speakers():
            emit(args, record.to_dict(), f"{record.id}\t{record.name}\t{record.count} recordings\t{record.seconds:.1f} s")
        return EXIT_OK
    if not args.speaker:
        raise VoxprintError(f"`speakers {args.action}` needs a speaker id")
    if args.action == "show":
        record = table.speaker(args.speaker)
        enrollments = [{"source": e.source, "seconds": round(e.seconds, 3), "quality": round(e.quality, 3),
                        "audio_kept": e.has_audio} for e in table.enrollments(args.speaker)]
        emit(args, {**record.to_dict(), "model": table.model_identity, "recordings": enrollments},
             "\n".join([f"{record.id} ({record.name}): {record.count} recordings, {record.seconds:.1f} s of speech"]
                       + [f"  {e['source']}  {e['seconds']:.2f} s  quality {e['quality']:.2f}" for e in enrollments]))
    elif args.action == "remove":
        table.remove(args.speaker)
        emit(args, {"removed": args.speaker}, f"removed {args.speaker}")
    else:
        if not args.new_id:
            raise VoxprintError("`speakers rename` needs the new id: speakers rename OLD NEW")
        record = table.rename(args.speaker, args.new_id, args.name)
        emit(args, {"renamed": args.speaker, **record.to_dict()}, f"renamed {args.speaker} to {record.id}")
    return EXIT_OK


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["reembed", "info"], help="reembed: move the store to --model; info: its model")
    store_option(p, must_exist=True)
    model_options(p)
    json_option(p)


@verb("store", "re-embed a store's kept audio with another model, or show which model made it",
      "voxprint store reembed --store speakers.db --model exp/new_model", _store_args)
def _store(args: argparse.Namespace) -> int:
    from voxprint.store import EmbeddingTable, SpeakerStore

    table = EmbeddingTable(args.store, create=False)
    if args.action == "info":
        speakers = len(table.speakers())
        name = table.get_meta("model_name") or None  # recorded since stores name their model
        emit(args, {"store": args.store, "model": table.model_identity, "model_name": name, "speakers": speakers,
                    "version": table.version},
             f"{args.store}: model {name + ' ' if name else ''}{table.model_identity}, {speakers} speakers")
        return EXIT_OK
    model = load_cli_model(args)
    store = SpeakerStore(args.store, None, create=False)
    count = store.reembed(model)
    emit(args, {"store": args.store, "model": model.identity, "reembedded": count},
         f"re-embedded {count} recordings of {Path(args.store)} with model {model.identity}")
    return EXIT_OK
