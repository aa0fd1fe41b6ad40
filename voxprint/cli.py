"""The ``voxprint`` command.

Exit codes: 0 success (for ``verify``: accept), 1 an error (one ``voxprint: error: ...`` line on
stderr), 2 a usage error (argparse's message), 3 ``verify`` rejected the test recording, 130
interrupted. Results go to stdout (``--json``: one JSON object per line); progress bars and
warnings go to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from voxprint import __version__
from voxprint.errors import VoxprintError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REJECT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EMBEDDING_SUFFIXES = (".npz", ".ark")


@dataclass(frozen=True)
class Verb:
    """One sub-command: its parser set-up, what it does, and a usage example for its help."""

    name: str
    help: str
    example: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, example: str,
         arguments: Callable[[argparse.ArgumentParser], None]) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as the sub-command ``name`` (its parser is built by ``arguments``)."""

    def decorator(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        VERBS[name] = Verb(name, help, example, arguments, run)
        return run

    return decorator


# ---------------------------------------------------------------------------------------------- shared options

def default_threads() -> int:
    """Torch threads when ``--threads`` is not given: ``VOXPRINT_THREADS``, else half the usable cores.

    Half, because decoding, data loading and whatever else runs on the machine need cores too; a
    busy 2-core machine with torch's default (all cores) ran training about 40x slower than with
    one thread (docs/benchmarks.md, "Threads").
    """
    env = os.environ.get("VOXPRINT_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise VoxprintError(f"VOXPRINT_THREADS must be a whole number, not {env!r}") from None
        if value < 1:
            raise VoxprintError(f"VOXPRINT_THREADS must be at least 1, not {value}")
        return value
    return max(1, len(os.sched_getaffinity(0)) // 2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _rate(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a rate between 0 and 1 (e.g. 0.01 for 1 %), got {text}")
    return value


def _model_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    if required:
        p.add_argument("--model", required=True, help="trained run folder")
    else:
        p.add_argument("--model", default="default", help="trained run folder, or 'default' for the bundled model "
                                                          "(default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA when available; default: cpu)")
    _thread_option(p)
    p.add_argument("--max-seconds", type=_positive_float, default=4 * 3600.0,
                   help="refuse recordings longer than this (default: 4 hours)")


def _thread_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads (default: $VOXPRINT_THREADS, else half the usable cores)")


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print results as JSON, one object per line")


def _quiet_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _on_error_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="a recording that cannot be embedded: fail (default; every file is checked first and the "
                        "bad ones counted) or skip it and report it (scores that need it are reported missing)")


def emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    """Print one result: a JSON line with ``--json``, else the human-readable text."""
    print(json.dumps(record) if getattr(args, "json", False) else text, flush=True)


def check_output_path(path: str | os.PathLike, what: str, suffixes: Sequence[str] | None = None) -> Path:
    """Check before any slow work that ``path`` has an accepted suffix and can be written.

    The folder is created if needed and probed with a real (immediately removed) file, because
    permission bits alone do not tell (root, read-only mounts).
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise VoxprintError(f"{what} {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise VoxprintError(f"{what} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.voxprint-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise VoxprintError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None
    return path


def check_writable_folder(path: str | os.PathLike, what: str) -> Path:
    """Like :func:`check_output_path` for an output folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise VoxprintError(f"{what} {folder} exists and is not a folder")
    check_output_path(folder / "probe", what)
    return folder


def _load_model(args: argparse.Namespace):
    from voxprint.inference import load_model

    return load_model(args.model, device=args.device, max_seconds=args.max_seconds)


def _refuse_builtin(model: str, action: str) -> None:
    from voxprint.runs import is_builtin

    if is_builtin(model):
        raise VoxprintError(f"{action} writes into a trained run folder, not the built-in model {model!r}; "
                            "train one with `voxprint train`")


def _report_skipped(skipped: dict[str, str]) -> None:
    """Skipped recordings are never dropped silently: each is named on stderr."""
    for name, reason in skipped.items():
        print(f"voxprint: skipped {name}: {reason}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- verbs

def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio_root", help="folder holding SPEAKER/UTTERANCE.wav (or .flac, .ogg, .mp3)")
    p.add_argument("--out", help="output data folder (default: the audio folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing wav.scp/utt2spk/spk2utt in the output folder")
    _json_option(p)


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


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--out", required=True, help="run folder (checkpoint, model, history)")
    p.add_argument("--data", help="training data folder (overrides data.train)")
    p.add_argument("--epochs", type=_positive_int, help="override optim.epochs")
    p.add_argument("--seed", type=int, help="override seed (a resumed run must keep its seed)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the process's GPU under torchrun, else "
                                    "CUDA when available, else cpu)")
    _thread_option(p)
    _quiet_option(p)
    _json_option(p)


@verb("train", "train a model from a YAML config",
      "voxprint train configs/ecapa_tdnn_c192.yaml --out exp/ecapa --threads 2", _train_args)
def _train(args: argparse.Namespace) -> int:
    from voxprint.config import load_config
    from voxprint.training import train

    overrides: dict = {}
    if args.data:
        overrides.setdefault("data", {})["train"] = str(Path(args.data).resolve())
    if args.epochs:
        overrides.setdefault("optim", {})["epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_config(args.config, overrides)
    check_writable_folder(args.out, "--out")

    def report_epoch(epoch: int, record: dict[str, Any]) -> None:
        print(json.dumps({"epoch_end": record}), flush=True)

    result = train(config, args.out, resume=args.resume, progress=not args.quiet,
                   on_epoch_end=report_epoch if args.json else None, device=args.device)
    metric = config["optim"]["select_by"]
    emit(args, {"out": str(result.out_dir), "epochs": result.epochs_run, "select_by": metric,
                "best": result.best_valid},
         f"trained {result.epochs_run} epochs; best {metric.replace('_', ' ')} {result.best_valid:.4f}; "
         f"model in {result.out_dir}")
    return EXIT_OK


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="audio files to embed (instead of --data); their ids are the paths")
    p.add_argument("--data", help="data folder with wav.scp (utt2spk is not needed)")
    p.add_argument("--out", required=True, help="embedding file: .npz, or .ark (Kaldi; an .scp is written beside it)")
    _model_options(p)
    _on_error_option(p)
    _quiet_option(p)
    _json_option(p)


@verb("embed", "embed audio files or every utterance of a data folder",
      "voxprint embed --data data/dev --out dev.npz   |   voxprint embed a.flac b.flac --out ab.npz",
      _embed_args)
def _embed(args: argparse.Namespace) -> int:
    from voxprint.data.embeddings import save_embeddings

    if bool(args.files) == bool(args.data):
        raise VoxprintError("give either audio files or --data DIR (not both)")
    check_output_path(args.out, "--out", EMBEDDING_SUFFIXES)
    model = _load_model(args)
    if args.data:
        result = model.embed_folder(args.data, progress=not args.quiet, on_error=args.on_error)
    else:
        if args.on_error == "fail":
            model.check_files({path: path for path in args.files}, "the command line")
        result = model.embed_many(args.files, names=args.files, on_error=args.on_error, progress=not args.quiet)
    _report_skipped(result.skipped)
    if not result.ids:
        raise VoxprintError("no recording could be embedded")
    path = save_embeddings(args.out, result.ids, result.embeddings)
    emit(args, {"out": str(path), "embeddings": len(result.ids), "dim": int(result.embeddings.shape[1]),
                "skipped": result.skipped},
         f"wrote {len(result.ids)} embeddings of size {result.embeddings.shape[1]} to {path}"
         + (f" ({len(result.skipped)} skipped)" if result.skipped else ""))
    return EXIT_OK


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", required=True, help="trial list: 'LABEL ENROLL TEST' or 'ENROLL TEST' lines")
    p.add_argument("--embeddings", required=True, help="embedding file from `voxprint embed` (.npz or .ark)")
    p.add_argument("--out", required=True, help="score file to write ('ENROLL TEST SCORE [LABEL]' lines)")
    _json_option(p)


@verb("score", "cosine-score a trial list from stored embeddings",
      "voxprint score --trials data/dev/trials.txt --embeddings dev.npz --out scores.txt", _score_args)
def _score(args: argparse.Namespace) -> int:
    from voxprint.backends.scoring import cosine_score_trials
    from voxprint.data.trials import read_trials, write_scores
    from voxprint.data.embeddings import load_embeddings
    from voxprint.metrics import evaluate_scores

    check_output_path(args.out, "--out")
    trials = read_trials(args.trials)
    ids, matrix = load_embeddings(args.embeddings)
    trials, missing = _trials_with_embeddings(trials, set(ids))
    scores = cosine_score_trials(ids, matrix, trials)
    write_scores(args.out, trials, scores)
    record: dict[str, Any] = {"out": args.out, "scores": len(scores), "scale": "cosine", "missing_trials": missing}
    text = f"wrote {len(scores)} cosine scores to {args.out}" + (f" ({missing} trials missing)" if missing else "")
    if trials.labels is not None:
        metrics = evaluate_scores(scores, trials.labels).to_dict()
        record.update(metrics)
        text += "\n" + _format_metrics(metrics)
    emit(args, record, text)
    return EXIT_OK


def _trials_with_embeddings(trials: Any, available: set[str]) -> tuple[Any, int]:
    """The trials whose both sides have an embedding, and how many were left out."""
    import numpy as np

    from voxprint.data.trials import Trials

    keep = np.fromiter((e in available and t in available for e, t in zip(trials.enroll, trials.test)),
                       dtype=bool, count=len(trials))
    if keep.all():
        return trials, 0
    if not keep.any():
        raise VoxprintError(f"none of the {len(trials)} trials of {trials.path} has embeddings for both sides")
    labels = trials.labels[keep] if trials.labels is not None else None
    return Trials(labels=labels, enroll=trials.enroll[keep], test=trials.test[keep], path=trials.path), \
        int((~keep).sum())


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder with wav.scp (and trials.txt unless --trials)")
    p.add_argument("--trials", help="trial list (default: DATA/trials.txt)")
    _model_options(p)
    p.add_argument("--det", help="save a DET curve PNG here")
    p.add_argument("--enroll", help="enrollment list 'MODEL UTT1 UTT2 ...': trials may then name models")
    p.add_argument("--backend", choices=["cosine", "plda"], help="scoring back-end (default: the model's)")
    p.add_argument("--norm", choices=["none", "snorm", "asnorm"], help="score normalisation (default: the model's)")
    p.add_argument("--calibrated", action=argparse.BooleanOptionalAction, default=None,
                   help="map scores to log-likelihood ratios with the model's calibration")
    p.add_argument("--write-threshold", action="store_true",
                   help="store the threshold and this back-end in the model folder's meta.json (used by verify)")
    p.add_argument("--target-far", type=_rate,
                   help="with --write-threshold: threshold for this false-accept rate (0-1) instead of the EER")
    _on_error_option(p)
    _quiet_option(p)
    _json_option(p)


@verb("eval", "embed a data folder, score its trials, print EER and minDCF",
      "voxprint eval --data data/dev --model exp/ecapa --backend plda --calibrated --det det.png",
      _eval_args)
def _eval(args: argparse.Namespace) -> int:
    from voxprint.data.trials import read_trials
    from voxprint.backends.backend import ScoringBackend
    from voxprint.metrics import evaluate_scores
    from voxprint.metrics.plots import plot_det
    from voxprint.runs import RunLock, resolve_model_dir

    data = Path(args.data)
    if args.target_far is not None and not args.write_threshold:
        raise VoxprintError("--target-far only applies with --write-threshold")
    if args.write_threshold:
        _refuse_builtin(args.model, "--write-threshold")
    if args.det:
        check_output_path(args.det, "--det", (".png",))
    trials = read_trials(args.trials or data / "trials.txt")
    if trials.labels is None:
        raise VoxprintError(f"{trials.path} has no labels; eval needs 'LABEL ENROLL TEST' lines")
    enrollments = None
    if args.enroll:
        from voxprint.data.trials import read_enrollments

        enrollments = read_enrollments(args.enroll)
    model = _load_model(args)
    chosen = {"kind": args.backend, "norm": args.norm, "calibrated": args.calibrated}
    options = {**model.meta.get("backend", {}), **{k: v for k, v in chosen.items() if v is not None}}
    backend = ScoringBackend.load(model.model_dir, **options) if options else ScoringBackend()
    lock = RunLock(resolve_model_dir(args.model), "eval --write-threshold") if args.write_threshold else None
    if lock is not None:
        lock.acquire()  # before the slow part, so a concurrent writer is reported at once
    try:
        embedded = model.embed_folder(data, progress=not args.quiet, on_error=args.on_error)
        _report_skipped(embedded.skipped)
        ids, matrix = embedded.ids, embedded.embeddings
        if enrollments is not None:
            from voxprint.backends.scoring import add_enrollment_models

            available = set(ids)
            enrollments = {m: [u for u in utts if u in available] for m, utts in enrollments.items()}
            ids, matrix = add_enrollment_models(ids, matrix, {m: u for m, u in enrollments.items() if u})
        usable, missing = _trials_with_embeddings(trials, set(ids))
        scores = backend.score_trials(ids, matrix, usable)
        result = {"backend": backend.name, **evaluate_scores(scores, usable.labels).to_dict(),
                  "missing_trials": missing}
        if args.det:
            plot_det({f"{args.model} ({backend.name})": (scores, usable.labels)}, args.det)
        if args.write_threshold:
            _write_threshold(model.model_dir, result, data, options, scores[usable.labels == 0], args.target_far)
    finally:
        if lock is not None:
            lock.release()
    missing_text = f"; {missing} trials missing (skipped recordings)" if missing else ""
    emit(args, result, f"{backend.name}: {_format_metrics(result)}{missing_text}")
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


def _fit_backend_args(p: argparse.ArgumentParser) -> None:
    _model_options(p, required=True)
    p.add_argument("--data", help="training data folder with utt2spk (default: the model's data.train)")
    p.add_argument("--top-n", type=_positive_int, default=100, help="AS-norm cohort size (default: %(default)s)")
    p.add_argument("--calibration-trials", type=_positive_int, default=100_000,
                   help="trials drawn from the training speakers to fit the calibrations (default: %(default)s)")
    _quiet_option(p)
    _json_option(p)


@verb("fit-backend", "fit cohort, PLDA and calibrations on a model's training data",
      "voxprint fit-backend --model exp/ecapa", _fit_backend_args)
def _fit_backend(args: argparse.Namespace) -> int:
    from voxprint.backends.backend import fit_backend
    from voxprint.data import read_data_folder
    from voxprint.runs import RunLock

    _refuse_builtin(args.model, "fit-backend")
    model = _load_model(args)
    data = args.data or model.config["data"].get("train")
    if not data:
        raise VoxprintError("no training data: pass --data")
    folder = read_data_folder(data)
    with RunLock(model.model_dir, "fit-backend"):
        embedded = model.embed_folder(folder.root, progress=not args.quiet)
        summary = fit_backend(model.model_dir, embedded.ids, embedded.embeddings, folder.utt2spk, top_n=args.top_n,
                              calibration_trials=args.calibration_trials)
    emit(args, summary, json.dumps(summary, indent=1))
    return EXIT_OK


def _clean_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder to clean (wav.scp and utt2spk)")
    p.add_argument("--out", required=True, help="cleaned data folder (wav.scp, utt2spk, spk2utt, report.tsv)")
    _model_options(p)
    p.add_argument("--majority", type=_rate, default=0.6,
                   help="the larger group must hold more than this fraction of a speaker's utterances")
    p.add_argument("--silhouette", type=float, default=0.3, help="the split's cosine silhouette must exceed this")
    _on_error_option(p)
    _quiet_option(p)
    _json_option(p)


@verb("clean", "drop utterances filed under the wrong speaker (K=2 spherical k-means)",
      "voxprint clean --data data/train --out data/train_clean", _clean_args)
def _clean(args: argparse.Namespace) -> int:
    from voxprint.data.cleaning import REPORT_NAME, clean_data_folder
    from voxprint.data import read_data_folder

    check_writable_folder(args.out, "--out")
    folder = read_data_folder(args.data)
    out, report = clean_data_folder(folder, _load_model(args), args.out, majority=args.majority,
                                    silhouette=args.silhouette, progress=not args.quiet,
                                    on_error=args.on_error)
    _report_skipped(report.skipped)
    emit(args, {"out": str(out), "removed": sorted(report.removed), "utterances": len(folder),
                "cleaned_speakers": report.cleaned_speakers, "skipped": report.skipped},
         f"removed {len(report.removed)} of {len(folder)} utterances from {len(report.cleaned_speakers)} of "
         f"{len(folder.speakers)} speakers; wrote {out} (decisions in {out / REPORT_NAME})"
         + (f"; {len(report.skipped)} recordings skipped" if report.skipped else ""))
    return EXIT_OK


def _similarity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first recording")
    p.add_argument("b", help="second recording")
    _model_options(p)
    _json_option(p)


@verb("similarity", "cosine similarity of two recordings' embeddings (in [-1, 1], not calibrated)",
      "voxprint similarity a.flac b.flac", _similarity_args)
def _similarity(args: argparse.Namespace) -> int:
    cosine = _load_model(args).compute_similarity(args.a, args.b)
    emit(args, {"cosine": cosine}, f"cosine {cosine:.4f}")
    return EXIT_OK


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--enroll", action="append", required=True,
                   help="enrollment recording of the claimed speaker (repeat for several; all are used)")
    p.add_argument("--test", required=True, help="recording to verify")
    _model_options(p)
    p.add_argument("--threshold", type=float,
                   help="accept when the score is at least this (default: the model's stored threshold, on the "
                        "scale of its back-end: a log-likelihood ratio for the bundled model)")
    _json_option(p)


@verb("verify", "accept or reject a test recording against enrollment recordings (exit 0 accept, 3 reject)",
      "voxprint verify --enroll a1.flac --enroll a2.flac --test b.flac && echo same speaker", _verify_args)
def _verify(args: argparse.Namespace) -> int:
    model = _load_model(args)
    threshold = args.threshold if args.threshold is not None else model.threshold
    if threshold is None:
        raise VoxprintError(f"model {args.model!r} has no stored threshold; pass --threshold "
                            "(or store one with `voxprint eval --write-threshold`)")
    score = model.verification_score(args.enroll, args.test)
    decision = "accept" if score >= threshold else "reject"
    scale = model.backend.scale
    emit(args, {"score": score, "scale": scale, "threshold": threshold, "decision": decision},
         f"score {score:.4f} ({scale})  threshold {threshold:.4f}  {decision}")
    return EXIT_OK if decision == "accept" else EXIT_REJECT


def _format_metrics(result: dict) -> str:
    return (f"EER {100 * result['eer']:.2f}%  minDCF(0.01) {result['min_dcf_0.01']:.3f}  "
            f"minDCF(0.001) {result['min_dcf_0.001']:.3f}  ({result['trials']} trials, {result['targets']} targets)")


# ----------------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The ``voxprint`` argument parser: one sub-parser per registered verb, each with an example."""
    parser = argparse.ArgumentParser(
        prog="voxprint", description="Speaker recognition: train, embed, score, verify.",
        epilog="exit codes: 0 ok (verify: accept), 1 error, 2 usage error, 3 verify: reject",
    )
    parser.add_argument("--version", action="version", version=f"voxprint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for v in VERBS.values():
        p = sub.add_parser(v.name, help=v.help, description=v.help, epilog=f"example:\n  {v.example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        v.arguments(p)
    return parser


def _set_threads(args: argparse.Namespace) -> None:
    if "threads" not in args:
        return
    import torch

    torch.set_num_threads(args.threads or default_threads())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (e.g. main() called twice in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code (see the module)."""
    args = build_parser().parse_args(argv)
    try:
        _set_threads(args)
        return VERBS[args.command].run(args)
    except VoxprintError as exc:
        print(f"voxprint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a file the user named could not be read or written
        where = f" {exc.filename}" if exc.filename else ""
        print(f"voxprint: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("voxprint: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
