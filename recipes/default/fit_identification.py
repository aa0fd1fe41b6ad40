#!/usr/bin/env python3
"""Write the identification calibration and open-set threshold into a model's ``meta.json``.

    .venv/bin/python recipes/default/fit_identification.py [--model default]

Runs the eval-id protocol of ``voxprint eval-id --write-threshold --target-fpir 0.01`` on the 60
speechocean762 dev speakers (never seen in training) and stores ``identification: {threshold, fpir,
calibration, rule}``: the quality-measure calibration fitted on all 60 dev speakers, and the threshold
on ``score - ln N`` for a 1 % false-positive identification rate at the full gallery, set on cross-fitted
scores. ``voxprint eval-id`` refuses to write into the built-in model (it writes into run folders); this
script is how the bundled model got its entry, once. For a retrained model, `recipes/default/run.sh` runs
``voxprint eval-id --write-threshold`` on the run folder before copying it into the package.
"""
from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from voxprint.identification.evaluation import evaluate_model, fit_identification
from voxprint.inference import load_model
from voxprint.paths import data_root
from voxprint.runs import RunLock, is_builtin, resolve_model_dir, update_meta

TARGET_FPIR = 0.01


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="built-in model name or run folder (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = resolve_model_dir(args.model)
    # A run folder is locked like `eval-id --write-threshold` does; the package folder gets no lock file.
    with contextlib.nullcontext() if is_builtin(args.model) else RunLock(folder, "fit_identification.py"):
        model = load_model(args.model)
        run = evaluate_model(model, data_root() / "speechocean762" / "dev", progress=True)
        entry = fit_identification(run.trials, run.report, TARGET_FPIR, "speechocean762/dev")
        update_meta(folder, identification=entry)
    print(f"wrote identification threshold {entry['threshold']:.4f} (FPIR {TARGET_FPIR:g}) to {folder / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
