#!/usr/bin/env python3
"""Leaderboard: every trained system and back-end on speechocean762 dev, with Resemblyzer in the same run.

    .venv/bin/python bench/leaderboard.py          # after training the runs below (see recipes/)

For each run folder in SYSTEMS that exists: dev EER and minDCF (0.01, 0.001) with cosine, cosine +
AS-norm and PLDA scoring (back-ends are fitted on the run's training speakers first if missing; the
GMM-UBM has its own frame likelihood-ratio scoring instead), parameters, single-thread extraction
speed (x real time, features included, same ~120 s subset for every system) and training time (sum
of the run's epoch or EM-step times). Ratios are to Resemblyzer. The last row fuses the bundled
ECAPA-TDNN with the i-vector (``voxprint fuse``, trained on training-speaker trials, applied to dev).

A system whose run folder is not on this machine keeps its row from the previous run of this script
(marked, with its recipe command), so the board is never silently shortened.
Writes the table to docs/benchmarks.md, section "Leaderboard: speechocean762 dev".
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

# bench/verification.py: `python bench/leaderboard.py` puts bench/ on the path.
from verification import decode, measure_resemblyzer, optimized, speed_subset, time_extraction
from classical import Scored, fuse
from common import ensure_backend, parameter_count, training_minutes


from voxprint.data import read_data_folder
from voxprint.data.trials import make_calibration_trials, read_trials
from voxprint.inference import load_model
from voxprint.metrics import evaluate_scores
from voxprint.metrics.plots import plot_det
from voxprint.paths import data_root
from voxprint.report import BENCHMARKS_DOC, format_table, machine_description, write_markdown_section
from voxprint.runs import MODEL_FILE, is_builtin, resolve_model_dir

REPO = Path(__file__).resolve().parent.parent

SECTION = "Leaderboard: speechocean762 dev"
# (name, run folder, recipe command that trains it, run it starts from (its training time is added))
SYSTEMS = [
    ("GE2E LSTM d-vector", "exp/ge2e_lstm_small", "voxprint train configs/ge2e_lstm_small.yaml --out exp/ge2e_lstm_small",
     None),
    ("ECAPA-TDNN C=192 + AAM (bundled default)", "default",
     "voxprint train configs/ecapa_tdnn_c192.yaml --out exp/ecapa_c192 (shipped as `default`)", None),
    ("ECAPA-TDNN C=192 + large-margin fine-tune", "exp/ecapa_c192_lmft",
     "voxprint train configs/ecapa_tdnn_c192_lmft.yaml --out exp/ecapa_c192_lmft", "exp/ecapa_c192"),
    ("thin ResNet34 + AAM", "exp/resnet34_thin", "voxprint train configs/resnet34_thin.yaml --out exp/resnet34_thin",
     None),
    ("GMM-UBM, 512 Gaussians (MAP, top-5 LLR)", "exp/gmm_ubm_512",
     "voxprint train configs/gmm_ubm_512.yaml --out exp/gmm_ubm_512", None),
    ("i-vector, 256 Gaussians x rank 100", "exp/ivector_256_100",
     "voxprint train configs/ivector_256_100.yaml --out exp/ivector_256_100", None),
    ("i-vector, 512 Gaussians x rank 200", "exp/ivector_512_200",
     "voxprint train configs/ivector_512_200.yaml --out exp/ivector_512_200", None),
    ("i-vector, 128 Gaussians x rank 64 (bundled `ivector`, the diarization partner)", "ivector",
     "bash recipes/default/ivector.sh (shipped as `ivector`)", None),
]
#: The fusion row: (label, the systems fused by name, the back-end of each).
FUSION = ("fusion: ECAPA-TDNN (bundled default) + i-vector 512 x 200",
          ["ECAPA-TDNN C=192 + AAM (bundled default)", "i-vector, 512 Gaussians x rank 200"], ("plda", "none"))
CARRIED = " (carried over)"
BACKENDS = [("cosine", "none"), ("cosine", "asnorm"), ("plda", "none")]


def previous_rows(doc: Path) -> tuple[dict[tuple[str, str], list[str]], str | None]:
    """The rows of this section's table in ``doc`` by (system, back-end), and the machine they were
    measured on: the one a "carried over" note of that section names, else the section's own machine."""
    if not doc.is_file():
        return {}, None
    text = doc.read_text(encoding="utf-8")
    start = text.find(f"## {SECTION}")
    if start < 0:
        return {}, None
    section = text[start:].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 11 and cells[0] != "system" and not cells[0].startswith("-"):
            rows[(cells[0].removesuffix(CARRIED), cells[1])] = cells
    # The machine line has parentheses of its own ("Intel(R)"): the note's closing words end it.
    carried_from = re.search(r"measured on: (.+?)\), so compare", section)
    machine = re.search(r"^Machine: (.+?)\.$", section, re.MULTILINE)
    return rows, (carried_from or machine).group(1) if (carried_from or machine) else None


def backends_of(model) -> list[tuple[str, str] | None]:
    """Every embedding back-end, or the model's own scoring (None) for the GMM-UBM."""
    return BACKENDS if model.stores_embeddings else [None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed-seconds", type=float, default=120.0)
    parser.add_argument("--doc", default=None)
    args = parser.parse_args()

    dev = data_root() / "speechocean762" / "dev"
    trials = read_trials(dev / "trials.txt")
    folder = read_data_folder(dev)
    subset = speed_subset(folder, args.speed_seconds)
    waves, rate = decode(folder, subset)
    peer = measure_resemblyzer(dev, subset, trials)
    ref, ref_speed = peer["result"], peer["speed"][1]

    doc = Path(args.doc) if args.doc else BENCHMARKS_DOC
    earlier, earlier_machine = previous_rows(doc)
    carried: list[str] = []
    fusion_members: dict[str, Scored] = {}
    calibration_trials = make_calibration_trials(read_data_folder(data_root() / "speechocean762" / "train").utt2spk,
                                                 max_trials=100_000, seed=0)
    curves = {"Resemblyzer (cosine)": (peer["scores"], trials.labels)}
    rows = [[f"Resemblyzer {peer['version']} (pretrained GE2E, thousands of speakers)", "cosine",
             f"{100 * ref.eer:.2f}", f"{ref.min_dcf_01:.3f}", f"{ref.min_dcf_001:.3f}", f"{peer['params'] / 1e6:.2f}", f"{ref_speed:.0f}",
             "-", "1.00", "1.00", "1.00"]]
    for name, run_name, command, parent in SYSTEMS:
        run = resolve_model_dir(run_name) if is_builtin(run_name) else REPO / run_name
        if not (run / MODEL_FILE).is_file():
            kept = [cells for (system, _), cells in earlier.items() if system == name]
            print(f"{run} not trained: {len(kept)} row(s) of {name} carried over from the previous run")
            rows.extend([[cells[0].removesuffix(CARRIED) + CARRIED, *cells[1:]] for cells in kept])
            carried += [f"`{command}`"] if kept else []
            continue
        model = load_model(run)
        ensure_backend(model, run)
        torch.set_num_threads(os.cpu_count() or 1)
        params = parameter_count(model.model.encoder) / 1e6
        speed = time_extraction(optimized(run, 1), waves, rate, threads=1)
        minutes = training_minutes(run) + (training_minutes(REPO / parent) if parent else 0.0)
        best = None
        choices = backends_of(model)
        backends = [model.scoring_backend({} if c is None else {"kind": c[0], "norm": c[1]}) for c in choices]
        scored = model.score_trial_lists(dev, trials, backends, progress=True)  # one embedding pass
        for choice, backend, result in zip(choices, backends, scored):
            scores = result.scores
            res = evaluate_scores(scores, trials.labels)
            if name in FUSION[1] and choice == FUSION[2]:
                train_scores = model.score_trial_list(data_root() / "speechocean762" / "train", calibration_trials,
                                                      backend, progress=True).scores
                fusion_members[name] = Scored(name, backend.name, scores, train_scores)
            if best is None or res.eer < best[0]:
                best = (res.eer, f"{name} ({backend.name})", scores)
            rows.append([name, backend.name, f"{100 * res.eer:.2f}", f"{res.min_dcf_01:.3f}", f"{res.min_dcf_001:.3f}",
                         f"{params:.2f}", f"{speed:.0f}", f"{minutes:.0f}", f"{res.eer / ref.eer:.2f}",
                         f"{res.min_dcf_01 / ref.min_dcf_01:.2f}", f"{speed / ref_speed:.2f}"])
        curves[best[1]] = (best[2], trials.labels)
    if len(fusion_members) == len(FUSION[1]):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            fused = fuse([fusion_members[n] for n in FUSION[1]], calibration_trials, trials, Path(tmp))
        res = fused["metrics"]["fusion"]
        rows.append([FUSION[0], "fused " + FUSION[2][0], f"{100 * res['eer']:.2f}", f"{res['min_dcf_0.01']:.3f}",
                     f"{res['min_dcf_0.001']:.3f}", "-", "-", "-", f"{res['eer'] / ref.eer:.2f}",
                     f"{res['min_dcf_0.01'] / ref.min_dcf_01:.2f}", "-"])
    headers = ["system", "back-end", "EER %", "minDCF 0.01", "minDCF 0.001", "params (M)", "x real time, 1 thread",
               "training (min)", "EER / Resemblyzer", "minDCF 0.01 / Resemblyzer", "speed / Resemblyzer"]
    table = format_table(headers, rows)
    det_path = REPO / "docs" / "det_dev.png"
    plot_det(curves, det_path, title="speechocean762 dev: each system's best back-end")
    body = "\n".join([
        "Command: `.venv/bin/python bench/leaderboard.py`.",
        f"Machine: {machine_description()}.",
        "",
        f"{len(trials)} dev trials ({int(trials.labels.sum())} targets), 60 speakers unseen in training; every "
        "voxprint system is trained on the 125 speakers of speechocean762/train only. Back-ends (AS-norm cohort "
        "= training speaker means, top-100; LDA + two-covariance PLDA) are fitted on the same training data. "
        "Speed: single thread, features included, the same in-memory subset for every system. Training time is "
        "the sum of the run's epoch times (runs shared the 2 cores with other work, so it is an upper bound).",
        "",
        "Recipes: " + "; ".join(f"`{cmd}`" for _, _, cmd, _ in SYSTEMS) + ". A fine-tuning run's training "
        "time includes the run it starts from. The GMM-UBM scores frames (top-5 log-likelihood ratio of the "
        "MAP-adapted model, uncalibrated), so it has one row; its speed is that of its mean-supervector "
        "extraction (the same UBM posteriors). The fusion row is `voxprint fuse` (logistic regression, "
        f"p_target 0.01) of the two systems' raw PLDA scores, trained on {len(calibration_trials)} trials of the "
        "training speakers and applied to dev (details: docs/results/classical.md).",
        "",
        *([f"Rows marked \"carried over\" come from an earlier run of this script: their run folders were "
           f"not on this machine for this run ({'; '.join(carried)}). All their figures, speeds and ratios "
           f"included, are that run's (measured on: {earlier_machine}), so compare their speeds with each other, "
           "not with this run's.", ""] if carried else []),
        table,
        "",
        "![DET curves on speechocean762 dev](det_dev.png)",
    ])
    print(table)
    print(f"wrote {write_markdown_section(args.doc, SECTION, body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
