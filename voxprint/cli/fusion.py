"""Verbs of fusion: ``fuse`` (scores, :mod:`voxprint.backends.fusion`) and ``fuse-models`` (a model folder that
uses several models as one, :mod:`voxprint.inference.fused`)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from voxprint.cli.core import EXIT_OK, check_output_path, emit, format_metrics, json_option, rate, verb
from voxprint.errors import VoxprintError


def _fuse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", nargs="+", metavar="SCORES",
                   help="labelled score files of training-speaker trials, one per system ('ENROLL TEST SCORE LABEL' "
                        "lines, from `voxprint eval --scores` or `voxprint score --out`); never the trials you "
                        "evaluate on")
    p.add_argument("--load", metavar="FUSION.json", help="a fusion saved with --save (instead of --train)")
    p.add_argument("--apply", nargs="+", metavar="SCORES",
                   help="score files to fuse, one per system in the same order as --train (or as the loaded "
                        "fusion's systems); labelled files also get EER, minDCF and Cllr")
    p.add_argument("--out", help="with --apply: write the fused scores (log-likelihood ratios) here, "
                                 "'ENROLL TEST LLR [LABEL]' lines")
    p.add_argument("--save", metavar="FUSION.json", help="with --train: save the fusion as JSON")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="with --train: a name per system (default: the --train files' names without suffix)")
    p.add_argument("--p-target", type=rate, default=None,
                   help="with --train: effective target prior of the training objective (default: 0.01, the "
                        "operating point of minDCF(0.01); 0.5 minimises Cllr)")
    p.add_argument("--common-only", action="store_true",
                   help="keep only the trial pairs every file scores (default: files that score different pairs "
                        "are refused)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="fuse even when the --apply trials share utterance or model ids with the --train trials "
                        "(default: refused, since the fusion would be tested on what it was trained on)")
    json_option(p)


def _default_names(paths: list[str]) -> list[str]:
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    if len(set(paths)) == len(paths):
        return list(paths)
    raise VoxprintError("the same --train file is given twice")


def _check_arguments(args: argparse.Namespace) -> None:
    if bool(args.train) == bool(args.load):
        raise VoxprintError("give either --train SCORES... (to fit a fusion) or --load FUSION.json")
    if args.load:
        for option in ("save", "names", "p_target"):
            if getattr(args, option) is not None:
                raise VoxprintError(f"--{option.replace('_', '-')} only applies with --train")
        if not args.apply:
            raise VoxprintError("--load needs --apply SCORES... --out FILE (nothing else to do with a loaded fusion)")
        if args.allow_overlap:
            raise VoxprintError("--allow-overlap only applies with --train and --apply")
    if bool(args.apply) != bool(args.out):
        raise VoxprintError("--apply and --out go together")
    if args.train and args.apply and len(args.apply) != len(args.train):
        raise VoxprintError(f"{len(args.train)} --train files but {len(args.apply)} --apply files; give one of each "
                            "per system, in the same order")
    if args.names is not None and len(args.names) != len(args.train):
        raise VoxprintError(f"{len(args.names)} --names for {len(args.train)} --train files")
    if args.out:
        check_output_path(args.out, "--out")
    if args.save:
        check_output_path(args.save, "--save", (".json",))


def _read_aligned(paths: list[str], common_only: bool, what: str, need_labels: bool = False) -> Any:
    from voxprint.backends.fusion import align_scores, read_scores

    lists = [read_scores(p) for p in paths]
    for path, (trials, _) in zip(paths, lists):
        if need_labels and trials.labels is None:
            raise VoxprintError(f"{path} has no labels; {what} needs 'ENROLL TEST SCORE LABEL' lines (write them "
                                "with `voxprint eval --scores`, or `voxprint score` on a labelled trial list)")
    aligned = align_scores(lists, common_only=common_only)
    if any(aligned.dropped):
        counts = ", ".join(f"{n} from {p}" for n, p in zip(aligned.dropped, paths) if n)
        print(f"voxprint: {what}: kept the {len(aligned.trials)} trial pairs all files share; dropped {counts}",
              file=sys.stderr)
    return aligned


def _metrics(scores: Any, labels: Any) -> dict[str, Any]:
    from voxprint.backends.calibration import cllr, min_cllr
    from voxprint.metrics import evaluate_scores

    return {**evaluate_scores(scores, labels).to_dict(), "cllr": cllr(scores, labels),
            "min_cllr": min_cllr(scores, labels)}


@verb("fuse", "fuse several systems' scores into one log-likelihood ratio (logistic regression trained on "
              "labelled training-speaker trials, applied to others)",
      "voxprint fuse --train ecapa_train.txt ivec_train.txt --names ecapa ivector --save fusion.json \\\n"
      "      --apply ecapa_dev.txt ivec_dev.txt --out fused_dev.txt\n"
      "  voxprint fuse --load fusion.json --apply ecapa_dev.txt ivec_dev.txt --out fused_dev.txt --json",
      _fuse_args)
def _fuse(args: argparse.Namespace) -> int:
    from voxprint.backends.calibration import DEFAULT_P_TARGET
    from voxprint.backends.fusion import LinearFusion
    from voxprint.data.trials import write_scores

    _check_arguments(args)
    record: dict[str, Any] = {}
    lines: list[str] = []
    train_ids: set[str] = set()
    if args.train:
        names = args.names or _default_names(args.train)
        train = _read_aligned(args.train, args.common_only, "--train", need_labels=True)
        p_target = args.p_target if args.p_target is not None else DEFAULT_P_TARGET
        fusion = LinearFusion.fit(train.matrix, train.trials.labels, p_target=p_target, systems=names)
        train_ids = set(train.trials.enroll.tolist()) | set(train.trials.test.tolist())
        n, targets = len(train.trials), int(train.trials.n_targets or 0)
        record.update(train_trials=n, train_targets=targets, train_dropped=dict(zip(args.train, train.dropped)))
        lines.append(f"fusion of {fusion.n_systems} systems trained on {n} trials ({targets} targets) "
                     f"at p_target {fusion.p_target:g}:")
        files = args.train
    else:
        fusion = LinearFusion.load(args.load)
        record["loaded"] = args.load
        lines.append(f"fusion of {fusion.n_systems} systems from {args.load} (trained at p_target "
                     f"{fusion.p_target:g}):")
        files = args.apply
        if len(args.apply) != fusion.n_systems:
            raise VoxprintError(f"{args.load} fuses {fusion.n_systems} systems ({', '.join(fusion.systems)}) but "
                                f"{len(args.apply)} --apply files are given; give one per system, in that order")
    width = max(len(n) for n in (*fusion.systems, "offset", "fusion"))
    for name, weight, path in zip(fusion.systems, fusion.weights, files):
        lines.append(f"  {name:<{width}}  weight {weight:+.6g}  ({path})")
    lines.append(f"  {'offset':<{width}}  {fusion.offset:+.6g}")
    record.update(fusion.to_dict())
    del record["format"], record["version"]
    applied = None
    if args.apply:  # read and checked before anything is written
        applied = _read_aligned(args.apply, args.common_only, "--apply")
        if train_ids and not args.allow_overlap:
            shared = train_ids & (set(applied.trials.enroll.tolist()) | set(applied.trials.test.tolist()))
            if shared:
                raise VoxprintError(
                    f"the --apply trials share {len(shared)} utterance or model ids with the --train trials (e.g. "
                    f"{min(shared)!r}); train the fusion on other speakers' trials, or pass --allow-overlap")
    if args.save:
        fusion.save(args.save)
        record["saved"] = args.save
        lines.append(f"saved the fusion to {args.save}")

    if applied is not None:
        fused = fusion.transform(applied.matrix)
        write_scores(args.out, applied.trials, fused)
        record.update(out=args.out, scores=int(fused.size), apply_dropped=dict(zip(args.apply, applied.dropped)))
        lines.append(f"wrote {fused.size} fused scores (log-likelihood ratios) to {args.out}")
        labels = applied.trials.labels
        if labels is not None:
            per_system = {name: _metrics(applied.matrix[:, i], labels) for i, name in enumerate(fusion.systems)}
            fused_metrics = _metrics(fused, labels)
            record["metrics"] = {"systems": per_system, "fusion": fused_metrics}
            for name, m in [*per_system.items(), ("fusion", fused_metrics)]:
                lines.append(f"  {name:<{width}}  {format_metrics(m)}  Cllr {m['cllr']:.3f} "
                             f"(min {m['min_cllr']:.3f})")
    emit(args, record, "\n".join(lines))
    return EXIT_OK


def _fuse_models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="two or more built-in model names or model folders, the first setting the windows")
    p.add_argument("--out", required=True, help="the fusion's folder (created; must be empty)")
    p.add_argument("--weights", nargs="+", type=float, metavar="W",
                   help="one weight per model on its calibrated log-likelihood ratio (default: 1 each, the sum "
                        "of the models' LLRs)")
    json_option(p)


@verb("fuse-models", "make a model folder that uses several models as one: each embeds every recording, each scores "
                     "with its own back-end, and their log-likelihood ratios are added (weighted)",
      "voxprint fuse-models default ivector --out models/fused\n"
      "  voxprint enroll --store speakers.db --model models/fused --speaker alice a1.flac a2.flac",
      _fuse_models_args)
def _fuse_models(args: argparse.Namespace) -> int:
    import shutil

    from voxprint.backends.fusion import LinearFusion
    from voxprint.errors import DataError
    from voxprint.inference.fused import FUSION_FILE
    from voxprint.runs import is_builtin

    if len(args.models) < 2:
        raise VoxprintError("a fusion needs two or more models")
    weights = args.weights or [1.0] * len(args.models)
    if len(weights) != len(args.models):
        raise VoxprintError(f"{len(weights)} --weights for {len(args.models)} models; give one weight per model")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VoxprintError(f"{out} exists and is not an empty folder; choose another --out")
    # Folders are named relative to the fusion's folder, so the two can move together.
    systems = [name if is_builtin(name) else os.path.relpath(Path(name).resolve(), out.resolve())
               for name in args.models]
    try:
        fusion = LinearFusion(weights=tuple(weights), offset=0.0, systems=tuple(systems))
    except DataError as exc:
        raise VoxprintError(str(exc)) from None
    created = not out.exists()
    fusion.save(out / FUSION_FILE)
    try:
        from voxprint.inference import load_model

        model = load_model(out)  # every part loads and fits, or nothing is left behind
    except VoxprintError:
        if created:
            shutil.rmtree(out)
        else:
            (out / FUSION_FILE).unlink()
        raise
    emit(args, {"out": str(out), "models": systems, "weights": list(fusion.weights), "identity": model.identity,
                "embedding_dim": model.embedding_dim},
         f"wrote the fusion of {', '.join(args.models)} (weights {', '.join(f'{w:g}' for w in weights)}) to {out}; "
         f"use it with --model {out}")
    return EXIT_OK
