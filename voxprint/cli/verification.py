"""Verbs of verification: ``embed``, ``score``, ``eval``, ``similarity``, ``verify``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from voxprint.cli.core import (
    EMBEDDING_SUFFIXES,
    EXIT_OK,
    EXIT_REJECT,
    check_output_path,
    emit,
    format_metrics,
    json_option,
    load_cli_embedder,
    model_options,
    names_standalone_export,
    on_error_option,
    quiet_option,
    rate,
    refuse_builtin,
    report_skipped,
    verb,
)
from voxprint.errors import VoxprintError


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="audio files to embed (instead of --data); their ids are the paths")
    p.add_argument("--data", help="data folder with wav.scp (utt2spk is not needed)")
    p.add_argument("--out", required=True, help="embedding file: .npz, or .ark (Kaldi; an .scp is written beside it)")
    p.add_argument("--decode-workers", type=int, default=0, metavar="N",
                   help="decode audio in N worker processes while the model embeds (default: 0, decode in the "
                        "main process); worth it when decoding (e.g. resampling) is a large share of the work")
    model_options(p)
    on_error_option(p)
    quiet_option(p)
    json_option(p)


def _under_torchrun() -> bool:
    """True when ``RANK`` or ``WORLD_SIZE`` is set (``torchrun``): ``embed --data`` then reads its shard
    with :class:`voxprint.inference.sharding.Shard`."""
    return "RANK" in os.environ or "WORLD_SIZE" in os.environ


@verb("embed", "embed audio files or every utterance of a data folder (sharded under torchrun)",
      "voxprint embed --data data/dev --out dev.npz   |   voxprint embed a.flac b.flac --out ab.npz",
      _embed_args, torch_free=names_standalone_export)  # sharded under torchrun too: sharding needs no torch
def _embed(args: argparse.Namespace) -> int:
    from voxprint.data.embeddings import save_embeddings

    if args.decode_workers < 0:
        raise VoxprintError(f"--decode-workers must be 0 or more, not {args.decode_workers}")
    if bool(args.files) == bool(args.data):
        raise VoxprintError("give either audio files or --data DIR (not both)")
    check_output_path(args.out, "--out", EMBEDDING_SUFFIXES)
    shard = None
    if args.data and _under_torchrun():
        from voxprint.inference.sharding import Shard

        shard = Shard.from_env()
        if shard.world_size > 1 and str(args.device) in ("cuda", "auto"):
            import torch

            args.device = shard.device(str(args.device), torch.cuda.device_count())
    model = load_cli_embedder(args)  # an ONNX export: the torch-free embedder
    if args.data:
        if shard is not None and shard.world_size > 1:
            return _embed_shard(args, model, shard)
        result = model.embed_folder(args.data, progress=not args.quiet, on_error=args.on_error,
                                    decode_workers=args.decode_workers)
    else:
        if args.on_error == "fail":
            model.check_files({path: path for path in args.files}, "the command line")
        result = model.embed_many(args.files, names=args.files, on_error=args.on_error, progress=not args.quiet)
    report_skipped(result.skipped)
    if not result.ids:
        raise VoxprintError("no recording could be embedded")
    path = save_embeddings(args.out, result.ids, result.embeddings)
    emit(args, {"out": str(path), "embeddings": len(result.ids), "dim": int(result.embeddings.shape[1]),
                "skipped": result.skipped},
         f"wrote {len(result.ids)} embeddings of size {result.embeddings.shape[1]} to {path}"
         + (f" ({len(result.skipped)} skipped)" if result.skipped else ""))
    return EXIT_OK



def _embed_shard(args: argparse.Namespace, model: Any, shard: Any) -> int:
    """One rank of ``torchrun ... -m voxprint embed --data``: embed a slice, rank 0 merges (see
    :mod:`voxprint.inference.sharding`)."""
    import numpy as np

    from voxprint.data import read_data_folder
    from voxprint.data.embeddings import save_embeddings
    from voxprint.inference.sharding import merge_parts

    folder = read_data_folder(args.data, require_speakers=False)
    mine = shard.take(folder.utterances)
    if args.on_error == "fail":
        model.check_files({u: folder.wav[u] for u in mine}, f"{folder.root} (rank {shard.rank})")
    result = model.embed_many([folder.wav[u] for u in mine], names=mine, on_error=args.on_error,
                              progress=not args.quiet and shard.rank == 0, decode_workers=args.decode_workers)
    report_skipped(result.skipped)
    save_embeddings(shard.part_path(args.out), result.ids,
                    result.embeddings if result.ids else np.zeros((0, model.embedding_dim), np.float32))
    if shard.rank != 0:
        return EXIT_OK
    ids, matrix = merge_parts(shard, args.out, folder.utterances)
    if not ids:
        raise VoxprintError("no recording could be embedded")
    path = save_embeddings(args.out, ids, matrix)
    emit(args, {"out": str(path), "embeddings": len(ids), "dim": int(matrix.shape[1]), "ranks": shard.world_size},
         f"wrote {len(ids)} embeddings of size {matrix.shape[1]} to {path} (merged from {shard.world_size} ranks)")
    return EXIT_OK


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", required=True, help="trial list: 'LABEL ENROLL TEST' or 'ENROLL TEST' lines")
    p.add_argument("--embeddings", required=True, help="embedding file from `voxprint embed` (.npz or .ark)")
    p.add_argument("--out", required=True, help="score file to write ('ENROLL TEST SCORE [LABEL]' lines)")
    json_option(p)


@verb("score", "cosine-score a trial list from stored embeddings",
      "voxprint score --trials data/dev/trials.txt --embeddings dev.npz --out scores.txt", _score_args)
def _score(args: argparse.Namespace) -> int:
    from voxprint.backends.scoring import cosine_score_trials
    from voxprint.data.trials import keep_trials_with, read_trials, write_scores
    from voxprint.data.embeddings import load_embeddings
    from voxprint.metrics import evaluate_scores

    check_output_path(args.out, "--out")
    trials = read_trials(args.trials)
    ids, matrix = load_embeddings(args.embeddings)
    trials, missing = keep_trials_with(trials, set(ids))
    scores = cosine_score_trials(ids, matrix, trials)
    write_scores(args.out, trials, scores)
    record: dict[str, Any] = {"out": args.out, "scores": len(scores), "scale": "cosine", "missing_trials": missing}
    text = f"wrote {len(scores)} cosine scores to {args.out}" + (f" ({missing} trials missing)" if missing else "")
    if trials.labels is not None:
        metrics = evaluate_scores(scores, trials.labels).to_dict()
        record.update(metrics)
        text += "\n" + format_metrics(metrics)
    emit(args, record, text)
    return EXIT_OK


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder with wav.scp (and trials.txt unless --trials)")
    p.add_argument("--trials", help="trial list (default: DATA/trials.txt)")
    model_options(p)
    p.add_argument("--det", help="save a DET curve PNG here")
    p.add_argument("--scores", help="also write every trial's score here ('ENROLL TEST SCORE LABEL' lines, "
                                    "the input of `voxprint fuse`)")
    p.add_argument("--enroll", help="enrollment list 'MODEL UTT1 UTT2 ...': trials may then name models")
    p.add_argument("--backend", choices=["cosine", "plda"], help="scoring back-end (default: the model's)")
    p.add_argument("--norm", choices=["none", "snorm", "asnorm"], help="score normalisation (default: the model's)")
    p.add_argument("--calibrated", action=argparse.BooleanOptionalAction, default=None,
                   help="map scores to log-likelihood ratios with the model's calibration")
    p.add_argument("--write-threshold", action="store_true",
                   help="store the threshold and this back-end in the model folder's meta.json (used by verify)")
    p.add_argument("--target-far", type=rate,
                   help="with --write-threshold: threshold for this false-accept rate (0-1) instead of the EER")
    on_error_option(p)
    quiet_option(p)
    json_option(p)


@verb("eval", "embed a data folder, score its trials, print EER and minDCF",
      "voxprint eval --data data/dev --model exp/ecapa --backend plda --calibrated --det det.png",
      _eval_args, torch_free=names_standalone_export)
def _eval(args: argparse.Namespace) -> int:
    from voxprint.data.trials import read_trials, write_scores
    from voxprint.metrics import evaluate_scores
    from voxprint.metrics.plots import plot_det
    from voxprint.runs import RunLock, resolve_model_dir

    data = Path(args.data)
    if args.target_far is not None and not args.write_threshold:
        raise VoxprintError("--target-far only applies with --write-threshold")
    if args.write_threshold:
        refuse_builtin(args.model, "--write-threshold")
    if args.det:
        check_output_path(args.det, "--det", (".png",))
    if args.scores:
        check_output_path(args.scores, "--scores")
    trials = read_trials(args.trials or data / "trials.txt")
    if trials.labels is None:
        raise VoxprintError(f"{trials.path} has no labels; eval needs 'LABEL ENROLL TEST' lines")
    enrollments = None
    if args.enroll:
        from voxprint.data.trials import read_enrollments

        enrollments = read_enrollments(args.enroll)
    model = load_cli_embedder(args)  # an ONNX export: the torch-free embedder, same trial scoring and back-end
    chosen = {"kind": args.backend, "norm": args.norm, "calibrated": args.calibrated}
    options = {**model.meta.get("backend", {}), **{k: v for k, v in chosen.items() if v is not None}}
    backend = model.scoring_backend(options)
    lock = RunLock(resolve_model_dir(args.model), "eval --write-threshold") if args.write_threshold else None
    if lock is not None:
        lock.acquire()  # before the slow part, so a concurrent writer is reported at once
    try:
        scored = model.score_trial_list(data, trials, backend, enrollments, progress=not args.quiet,
                                        on_error=args.on_error)
        report_skipped(scored.skipped)
        usable, scores, missing = scored.trials, scored.scores, scored.missing
        result = {"backend": backend.name, **evaluate_scores(scores, usable.labels).to_dict(),
                  "missing_trials": missing}
        if args.det:
            plot_det({f"{args.model} ({backend.name})": (scores, usable.labels)}, args.det)
        if args.scores:
            write_scores(args.scores, usable, scores)
        if args.write_threshold:
            _write_threshold(model.model_dir, result, data, options, scores[usable.labels == 0], args.target_far)
    finally:
        if lock is not None:
            lock.release()
    missing_text = f"; {missing} trials missing (skipped recordings)" if missing else ""
    emit(args, result, f"{backend.name}: {format_metrics(result)}{missing_text}")
    return EXIT_OK


def _write_threshold(model_dir: Path, result: dict, data: Path, backend: dict, nontarget_scores, far) -> None:
    """Store the accept threshold and the back-end it belongs to in the run folder's meta.json."""
    from voxprint.runs import update_meta

    where = data.name if data.name != "dev" else f"{data.parent.name}/{data.name}"
    if far is None:
        threshold, rule = result["eer_threshold"], f"EER threshold on {where}"
    else:
        from voxprint.backends.calibration import threshold_for_false_accept_rate

        threshold, rule = threshold_for_false_accept_rate(nontarget_scores, far), f"false-accept rate {far:g} on {where}"
    update_meta(model_dir, threshold=float(threshold), threshold_rule=rule, backend=backend, eval=result)



def _similarity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first recording")
    p.add_argument("b", help="second recording")
    model_options(p)
    json_option(p)


@verb("similarity", "cosine similarity of two recordings' embeddings (in [-1, 1], not calibrated)",
      "voxprint similarity a.flac b.flac   |   voxprint similarity a.flac b.flac --model exported_onnx_folder",
      _similarity_args, torch_free=names_standalone_export)
def _similarity(args: argparse.Namespace) -> int:
    # An ONNX export runs without torch here: the answer comes in well under a second.
    cosine = load_cli_embedder(args).compute_similarity(args.a, args.b)
    emit(args, {"cosine": cosine}, f"cosine {cosine:.4f}")
    return EXIT_OK



def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--enroll", action="append",
                   help="enrollment recording of the claimed speaker (repeat for several; all are used)")
    p.add_argument("--store", help="speaker store holding the claimed speaker (instead of --enroll)")
    p.add_argument("--speaker", help="with --store: the claimed speaker's id")
    p.add_argument("--test", required=True, help="recording to verify")
    model_options(p, from_store=True)
    p.add_argument("--threshold", type=float,
                   help="accept when the score is at least this (default: the model's stored threshold, on the "
                        "scale of its back-end: a log-likelihood ratio for the bundled model)")
    json_option(p)


@verb("verify", "accept or reject a test recording against enrollment recordings or a stored speaker "
                "(exit 0 accept, 3 reject)",
      "voxprint verify --enroll a1.flac --enroll a2.flac --test b.flac && echo same speaker\n"
      "  voxprint verify --store speakers.db --speaker alice --test b.flac", _verify_args,
      torch_free=names_standalone_export)
def _verify(args: argparse.Namespace) -> int:
    if bool(args.enroll) == bool(args.store):
        raise VoxprintError("give either --enroll recordings or --store DB --speaker ID")
    if bool(args.store) != bool(args.speaker):
        raise VoxprintError("--store and --speaker go together")
    # An ONNX export verifies without torch, against enrollment files or a store (its back-end and
    # threshold are numpy and JSON; its identity is the one load_model gives the folder).
    model = load_cli_embedder(args)
    threshold = args.threshold if args.threshold is not None else model.threshold
    if threshold is None:
        raise VoxprintError(f"model {args.model!r} has no stored threshold; pass --threshold "
                            "(or store one with `voxprint eval --write-threshold`)")
    if args.store:
        from voxprint.store import SpeakerStore

        score = SpeakerStore(args.store, model, create=False).verify(args.speaker, args.test, threshold)["score"]
    else:
        score = model.verification_score(args.enroll, args.test)
    decision = "accept" if score >= threshold else "reject"
    scale = model.backend.scale
    emit(args, {"score": score, "scale": scale, "threshold": threshold, "decision": decision},
         f"score {score:.4f} ({scale})  threshold {threshold:.4f}  {decision}")
    return EXIT_OK if decision == "accept" else EXIT_REJECT
