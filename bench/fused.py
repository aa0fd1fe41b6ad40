#!/usr/bin/env python3
"""The bundled fusion (`fused`: the bundled ECAPA-TDNN and the bundled i-vector used as one model) against its
parts, on speechocean762 dev verification, and why its weights are equal.

    .venv/bin/python bench/fused.py [--speed-seconds 120]

One run, one torch thread and one BLAS thread:

1. each part (`default`, `ivector`) embeds the dev utterances and scores the 114,960 dev trials with its own
   back-end (calibrated PLDA);
2. the fusion (`voxprint.load_model("fused")`) embeds and scores the same trials end to end (its score is the
   sum of the parts' log-likelihood ratios);
3. the alternative it was chosen over: a logistic-regression fusion (``voxprint fuse``'s objective,
   p_target 0.01) trained on 100,000 trials of the 125 training speakers, applied to the parts' dev scores;
4. speed: x real time of each model on one thread, features included, on the same in-memory subset of dev.

The identification figures of the fusion come from ``bench/identification.py --model fused``. Writes
docs/benchmarks.md, section "Fusion of the bundled models: speechocean762 dev".
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from verification import decode, speed_subset, time_extraction  # bench/: `python bench/fused.py` puts it on the path

from voxprint.backends.calibration import cllr
from voxprint.backends.fusion import LinearFusion
from voxprint.data import read_data_folder
from voxprint.data.trials import make_calibration_trials, read_trials
from voxprint.inference import load_model
from voxprint.metrics import evaluate_scores
from voxprint.paths import data_root
from voxprint.report import format_table, publish_benchmark

SECTION = "Fusion of the bundled models: speechocean762 dev"
PARTS = ("default", "ivector")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed-seconds", type=float, default=120.0, help="audio in the speed subset")
    parser.add_argument("--doc", default=None, help="markdown file to update (default docs/benchmarks.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = data_root() / "speechocean762"
    dev, train = read_data_folder(root / "dev"), read_data_folder(root / "train")
    trials = read_trials(root / "dev" / "trials.txt")
    train_trials = make_calibration_trials(train.utt2spk, max_trials=100_000, seed=0)
    waves, rate = decode(dev, speed_subset(dev, args.speed_seconds))
    with threadpool_limits(limits=1, user_api="blas"):
        models = {name: load_model(name) for name in (*PARTS, "fused")}
        dev_scores, train_scores, speeds = {}, {}, {}
        for name, model in models.items():
            dev_scores[name] = model.score_trial_list(dev.root, trials, model.backend, progress=True).scores
            speeds[name] = time_extraction(model.optimize(), waves, rate, threads=1, repeats=3)
            if name in PARTS:
                train_scores[name] = model.score_trial_list(train.root, train_trials, model.backend,
                                                            progress=True).scores
    parts_dev = np.column_stack([dev_scores[n] for n in PARTS])
    summed = parts_dev.sum(axis=1)
    # The fused model's own scores are the sum of its parts' (up to float32 embeddings).
    agreement = float(np.max(np.abs(dev_scores["fused"] - summed)))
    learned = LinearFusion.fit(np.column_stack([train_scores[n] for n in PARTS]), train_trials.labels, systems=PARTS)
    labels = trials.labels
    rows_in = [("bundled ECAPA-TDNN (`default`), PLDA + calibration", dev_scores["default"], speeds["default"]),
               ("bundled i-vector (`ivector`), PLDA + calibration", dev_scores["ivector"], speeds["ivector"]),
               ("**bundled fusion (`fused`): sum of the two LLRs (shipped)**", dev_scores["fused"], speeds["fused"]),
               (f"logistic-regression fusion trained on training speakers (weights "
                f"{learned.weights[0]:.3f} / {learned.weights[1]:.3f})", learned.transform(parts_dev), None)]
    rows = []
    for label, scores, speed in rows_in:
        res = evaluate_scores(scores, labels)
        rows.append([label, f"{100 * res.eer:.2f}", f"{res.min_dcf_01:.3f}", f"{res.min_dcf_001:.3f}",
                     f"{cllr(scores, labels):.3f}", f"{speed:.0f}x" if speed else "-"])
    table = format_table(["system", "EER %", "minDCF 0.01", "minDCF 0.001", "Cllr", "x real time, 1 thread"], rows)
    print(table)
    notes = [
        f"{len(trials):,} dev trials ({int(labels.sum())} targets), 60 speakers unseen in training. The fusion "
        "(`voxprint fuse-models default ivector`, `recipes/default/fused.sh`) embeds every recording with both "
        "models and adds their calibrated PLDA log-likelihood ratios with equal weights; its scores here come from "
        f"the fused model end to end and differ from the sum of the parts' by at most {agreement:.1e}.",
        "",
        "Why equal weights: a logistic regression on trials of the 125 training speakers (the usual way to train "
        f"a fusion) gives the i-vector a weight of {learned.weights[1]:.3f} against the ECAPA's "
        f"{learned.weights[0]:.3f}, because the ECAPA was trained on those speakers and separates them almost "
        "perfectly; on unseen speakers that fusion is little better than the ECAPA alone (last row). The sum is "
        "what the two LLRs give if the models' errors were independent; they are not quite, so the sum is not "
        "a calibrated LLR (its Cllr) and its accept threshold is set on dev like every bundled model's "
        "(`meta.json`). Its identification figures: the section \"Identification: speechocean762 dev, model "
        "`fused`\".",
        "",
        f"Speed: one thread, features included, {len(waves)} dev recordings "
        f"({sum(len(w) for w in waves) / rate:.0f} s) decoded beforehand, best of 3 passes.",
    ]
    publish_benchmark(SECTION, ".venv/bin/python bench/fused.py", "One torch thread, one BLAS thread.", notes, table,
                      doc_path=args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
