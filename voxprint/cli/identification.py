"""Verb of identification evaluation: ``eval-id``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from voxprint.cli.core import (
    EXIT_OK,
    emit,
    json_option,
    load_cli_embedder,
    model_options,
    names_standalone_export,
    positive_int,
    quiet_option,
    rate,
    refuse_builtin,
    verb,
)
from voxprint.errors import VoxprintError


def _eval_id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder with wav.scp and utt2spk (speakers not seen in training)")
    model_options(p)
    p.add_argument("--enroll-utts", type=positive_int, default=3,
                   help="enrollment utterances per enrolled speaker; the rest probe (default: %(default)s)")
    p.add_argument("--unknown-fraction", type=rate, default=0.5,
                   help="share of the speakers held out as unknown, never enrolled (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the speaker split, galleries, calibration folds and segments (default: %(default)s)")
    p.add_argument("--calibration-draws", type=positive_int, default=4,
                   help="random orderings per speaker for the calibration trials of varied test length and "
                        "enrollment count (default: %(default)s)")
    p.add_argument("--write-threshold", action="store_true",
                   help="store the identification calibration (fitted on every speaker of --data) and the "
                        "open-set threshold in the model folder's meta.json (used by `identify`)")
    p.add_argument("--target-fpir", type=rate,
                   help="with --write-threshold: false-positive identification rate of the threshold, at the "
                        "largest gallery (default: 0.01)")
    quiet_option(p)
    json_option(p)


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _summary(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    lines = [f"{report['speakers']} speakers: {report['enrolled']} enrolled with {report['enroll_utts']} utterances "
             f"each ({report['known_probes']} known probes), {report['unknown']} unknown ({report['unknown_probes']} "
             "probes)"]
    for g in report["galleries"]:
        points = "  ".join(f"DIR@FPIR{100 * p['fpir_target']:g}% {_percent(p['dir'])}"
                           + ("" if p["resolved"] else " (no false positive allowed)") for p in g["open_set"])
        lines.append(f"gallery {g['gallery']}: top-1 {_percent(g['top1'])}  top-5 {_percent(g['top5'])}  {points}  "
                     f"Cllr {g['cllr']:.3f}  ({g['mated']} mated, {g['nonmated']} non-mated searches"
                     + (f" over {g['galleries']} galleries)" if g["galleries"] > 1 else ")"))
    cal = report["calibration"]
    before = f" (back-end's own: {cal['cllr_before']:.3f})" if cal.get("cllr_before") is not None else ""
    lines.append(f"calibration: cross-fitted over {cal['folds']} speaker folds, {cal['trials']} trials; "
                 f"Cllr {cal['cllr']:.3f}{before}")
    fpir = report["gallery_fpir"]
    sizes = ", ".join(f"{r['gallery']}: {_percent(r['fpir_fixed'])} fixed / {_percent(r['fpir_rule'])} - ln N"
                      for r in fpir["sizes"])
    lines.append(f"FPIR with thresholds set at gallery {fpir['reference_gallery']} for "
                 f"{_percent(fpir['target_fpir'])}: {sizes}")
    return "\n".join(lines)


@verb("eval-id", "evaluate closed- and open-set speaker identification on a data folder (top-k, DIR@FPIR, Cllr)",
      "voxprint eval-id --data data/dev --enroll-utts 3 --unknown-fraction 0.5 --json   |   "
      "voxprint eval-id --data data/dev --model exp/mine --write-threshold --target-fpir 0.01",
      _eval_id_args, torch_free=names_standalone_export)
def _eval_id(args: argparse.Namespace) -> int:
    from voxprint.identification.evaluation import FPIRS, evaluate_model, fit_identification
    from voxprint.runs import RunLock, resolve_model_dir, update_meta

    data = Path(args.data)
    if args.target_fpir is not None and not args.write_threshold:
        raise VoxprintError("--target-fpir only applies with --write-threshold")
    if args.write_threshold:
        refuse_builtin(args.model, "--write-threshold")
    target = args.target_fpir if args.target_fpir is not None else FPIRS[0]
    fpirs = tuple(dict.fromkeys((*FPIRS, target)))
    model = load_cli_embedder(args)  # an ONNX export: the torch-free embedder
    lock = RunLock(resolve_model_dir(args.model), "eval-id --write-threshold") if args.write_threshold else None
    if lock is not None:
        lock.acquire()  # before the slow part, so a concurrent writer is reported at once
    try:
        run = evaluate_model(model, data, enroll_utts=args.enroll_utts, unknown_fraction=args.unknown_fraction,
                             seed=args.seed, draws=args.calibration_draws, fpirs=fpirs, progress=not args.quiet)
        report = run.report
        text = _summary(report)
        if args.write_threshold:
            where = f"{data.resolve().parent.name}/{data.resolve().name}"
            entry = fit_identification(run.trials, report, target, where)
            update_meta(model.model_dir, identification=entry)
            report["identification"] = entry
            text += (f"\nwrote identification threshold {entry['threshold']:.4f} (FPIR {target:g}) and calibration "
                     f"to {model.model_dir / 'meta.json'}")
    finally:
        if lock is not None:
            lock.release()
    emit(args, report, text)
    return EXIT_OK
