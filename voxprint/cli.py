"""The ``voxprint`` command. Every user error ends as one ``voxprint: error: ...`` line and exit code 1."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from voxprint.errors import VoxprintError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def decorator(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = func
        return func

    return decorator


@command("prepare")
def _prepare(args: argparse.Namespace) -> int:
    from voxprint.data import prepare_data_folder

    folder = prepare_data_folder(args.audio_root, args.out)
    print(f"wrote {folder.root}: {len(folder)} utterances, {len(folder.speakers)} speakers")
    return 0


@command("train")
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
    result = train(config, args.out, resume=args.resume, progress=not args.quiet)
    metric = config["optim"]["select_by"].replace("_", " ")
    print(f"trained {result.epochs_run} epochs; best {metric} {result.best_valid:.4f}; model in {result.out_dir}")
    return 0


@command("embed")
def _embed(args: argparse.Namespace) -> int:
    from voxprint.data.embeddings import save_embeddings
    from voxprint.inference import load_model

    ids, matrix = load_model(args.model).embed_folder(args.data, progress=not args.quiet)
    path = save_embeddings(args.out, ids, matrix)
    print(f"wrote {len(ids)} embeddings of size {matrix.shape[1]} to {path}")
    return 0


@command("score")
def _score(args: argparse.Namespace) -> int:
    from voxprint.backends import cosine_score_trials, read_trials, write_scores
    from voxprint.data.embeddings import load_embeddings
    from voxprint.metrics import evaluate_scores

    trials = read_trials(args.trials)
    ids, matrix = load_embeddings(args.embeddings)
    scores = cosine_score_trials(ids, matrix, trials)
    write_scores(args.out, trials, scores)
    print(f"wrote {len(scores)} scores to {args.out}")
    if trials.labels is not None:
        print(_format_result(evaluate_scores(scores, trials.labels).to_dict()))
    return 0


@command("eval")
def _eval(args: argparse.Namespace) -> int:
    from voxprint.backends import read_trials
    from voxprint.backends.pipeline import ScoringBackend
    from voxprint.inference import load_model
    from voxprint.metrics import evaluate_scores
    from voxprint.metrics.plots import plot_det

    data = Path(args.data)
    trials = read_trials(args.trials or data / "trials.txt")
    if trials.labels is None:
        raise VoxprintError(f"{trials.path} has no labels; eval needs 'LABEL ENROLL TEST' lines")
    model = load_model(args.model)
    chosen = {"kind": args.backend, "norm": args.norm, "calibrated": args.calibrated}
    options = {**model.meta.get("backend", {}), **{k: v for k, v in chosen.items() if v is not None}}
    backend = ScoringBackend.load(model.model_dir, **options) if options else ScoringBackend()
    ids, matrix = model.embed_folder(data, progress=not (args.quiet or args.json))
    if args.enroll:
        from voxprint.backends.scoring import add_enrollment_models
        from voxprint.data.trials import read_enrollments

        ids, matrix = add_enrollment_models(ids, matrix, read_enrollments(args.enroll))
    scores = backend.score_trials(ids, matrix, trials)
    result = {"backend": backend.name, **evaluate_scores(scores, trials.labels).to_dict()}
    if args.det:
        plot_det({f"{args.model} ({backend.name})": (scores, trials.labels)}, args.det)
    if args.write_threshold:
        _write_threshold(args.model, result, data, options, scores[trials.labels == 0], args.target_far)
    print(json.dumps(result) if args.json else f"{backend.name}: {_format_result(result)}")
    return 0


def _write_threshold(model_name: str, result: dict, data: Path, backend: dict, nontarget_scores, far) -> None:
    """Store the accept threshold and the back-end it belongs to in the run folder's meta.json."""
    from voxprint.fileio import atomic_write_text
    from voxprint.inference.speaker_model import BUILTIN_MODELS, resolve_model_dir
    from voxprint.training.checkpoint import META_NAME

    if model_name in BUILTIN_MODELS:
        raise VoxprintError("--write-threshold changes a trained run folder, not a built-in model")
    where = data.name if data.name != "dev" else f"{data.parent.name}/{data.name}"
    if far is None:
        threshold, rule = result["eer_threshold"], f"EER threshold on {where}"
    else:
        from voxprint.backends.calibration import threshold_for_false_accept_rate

        threshold, rule = threshold_for_false_accept_rate(nontarget_scores, far), f"false-accept rate {far:g} on {where}"
    meta_path = resolve_model_dir(model_name) / META_NAME
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update({"threshold": threshold, "threshold_rule": rule, "backend": backend, "eval": result})
    atomic_write_text(meta_path, json.dumps(meta, indent=1))


@command("fit-backend")
def _fit_backend(args: argparse.Namespace) -> int:
    from voxprint.backends.pipeline import fit_backend
    from voxprint.data import read_data_folder
    from voxprint.inference import load_model
    from voxprint.inference.speaker_model import BUILTIN_MODELS

    if args.model in BUILTIN_MODELS:
        raise VoxprintError("fit-backend writes into a trained run folder, not a built-in model")
    model = load_model(args.model)
    data = args.data or model.config["data"].get("train")
    if not data:
        raise VoxprintError("no training data: pass --data")
    folder = read_data_folder(data)
    ids, matrix = model.embed_folder(folder.root, progress=not args.quiet)
    summary = fit_backend(model.model_dir, ids, matrix, folder.utt2spk, top_n=args.top_n,
                          calibration_trials=args.calibration_trials)
    print(json.dumps(summary, indent=1))
    return 0


@command("clean")
def _clean(args: argparse.Namespace) -> int:
    from voxprint.backends.cleaning import REPORT_NAME, clean_data_folder
    from voxprint.data import read_data_folder
    from voxprint.inference import load_model

    folder = read_data_folder(args.data)
    out, report = clean_data_folder(folder, load_model(args.model), args.out, majority=args.majority,
                                    silhouette=args.silhouette, progress=not args.quiet)
    print(f"removed {len(report.removed)} of {len(folder)} utterances from {len(report.cleaned_speakers)} of "
          f"{len(folder.speakers)} speakers; wrote {out} (decisions in {out / REPORT_NAME})")
    return 0


def _format_result(result: dict) -> str:
    return (f"EER {100 * result['eer']:.2f}%  minDCF(0.01) {result['min_dcf_0.01']:.3f}  "
            f"minDCF(0.001) {result['min_dcf_0.001']:.3f}  ({result['trials']} trials, {result['targets']} targets)")


@command("similarity")
def _similarity(args: argparse.Namespace) -> int:
    from voxprint.inference import load_model

    print(f"{load_model(args.model).compute_similarity(args.a, args.b):.4f}")
    return 0


@command("verify")
def _verify(args: argparse.Namespace) -> int:
    from voxprint.inference import load_model

    model = load_model(args.model)
    threshold = args.threshold if args.threshold is not None else model.threshold
    if threshold is None:
        raise VoxprintError(f"model {args.model!r} has no stored threshold; pass --threshold")
    score = model.verification_score(args.enroll, args.test)
    decision = "accept" if score >= threshold else "reject"
    if args.json:
        print(json.dumps({"score": score, "threshold": threshold, "decision": decision}))
    else:
        print(f"score {score:.4f}  threshold {threshold:.4f}  {decision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxprint", description="Speaker verification: train, embed, score, verify.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = "trained run folder, or 'default' for the bundled model"

    p = sub.add_parser("prepare", help="build wav.scp/utt2spk from a SPEAKER/UTTERANCE.wav tree")
    p.add_argument("audio_root")
    p.add_argument("--out", help="output data folder (default: the audio folder)")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="run folder (checkpoint, model, history)")
    p.add_argument("--data", help="training data folder (overrides data.train)")
    p.add_argument("--epochs", type=int, help="override optim.epochs")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("embed", help="embed every utterance of a data folder")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help=".npz or .ark file")
    p.add_argument("--model", default="default", help=model_help)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("score", help="cosine-score a trial list from stored embeddings")
    p.add_argument("--trials", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("eval", help="embed a data folder, score its trials, print EER and minDCF")
    p.add_argument("--data", required=True)
    p.add_argument("--trials", help="trial list (default: DATA/trials.txt)")
    p.add_argument("--model", default="default", help=model_help)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--det", help="save a DET curve PNG here")
    p.add_argument("--enroll", help="enrollment list 'MODEL UTT1 UTT2 ...': trials may then name models")
    p.add_argument("--backend", choices=["cosine", "plda"], help="scoring back-end (default: the model's)")
    p.add_argument("--norm", choices=["none", "snorm", "asnorm"], help="score normalisation (default: the model's)")
    p.add_argument("--calibrated", action=argparse.BooleanOptionalAction, default=None,
                   help="map scores to log-likelihood ratios with the model's calibration")
    p.add_argument("--write-threshold", action="store_true",
                   help="store the threshold and this back-end in the model folder's meta.json (used by verify)")
    p.add_argument("--target-far", type=float,
                   help="with --write-threshold: threshold for this false-accept rate instead of the EER")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("fit-backend", help="fit cohort, PLDA and calibrations on a model's training data")
    p.add_argument("--model", required=True, help="trained run folder")
    p.add_argument("--data", help="training data folder (default: the model's data.train)")
    p.add_argument("--top-n", type=int, default=100, help="AS-norm cohort size")
    p.add_argument("--calibration-trials", type=int, default=100_000)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("clean", help="drop utterances filed under the wrong speaker (K=2 spherical k-means)")
    p.add_argument("--data", required=True, help="data folder to clean")
    p.add_argument("--out", required=True, help="cleaned data folder (wav.scp, utt2spk, spk2utt, report.tsv)")
    p.add_argument("--model", default="default", help=model_help)
    p.add_argument("--majority", type=float, default=0.6,
                   help="the larger group must hold more than this fraction of a speaker's utterances")
    p.add_argument("--silhouette", type=float, default=0.3, help="the split's cosine silhouette must exceed this")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("similarity", help="cosine similarity of two recordings")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--model", default="default", help=model_help)

    p = sub.add_parser("verify", help="accept or reject a test recording against enrollment recordings")
    p.add_argument("--enroll", action="append", required=True, help="enrollment recording (repeatable)")
    p.add_argument("--test", required=True)
    p.add_argument("--model", default="default", help=model_help)
    p.add_argument("--threshold", type=float, help="override the model's stored threshold")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except VoxprintError as exc:
        print(f"voxprint: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("voxprint: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
