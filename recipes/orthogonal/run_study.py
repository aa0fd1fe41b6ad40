#!/usr/bin/env python3
"""The orthogonal-regularisation study in one command (CPU-sized by default).

    .venv/bin/python -m recipes.orthogonal.run_study [--seeds 0 1] [--systems lstm_none tdnn_so_dec ...]
                                                      [--paper] [--epochs N] [--out exp/orthogonal]

Trains every system of recipes/orthogonal/systems/ (resuming finished or interrupted runs; finished
runs are recorded in docs/results/orthogonal_runs/ and not trained again), scores each on the
speechocean762 dev trials by cosine, and writes docs/results/orthogonal.md with EER, minDCF (0.01,
0.001) and training time per system (mean and spread over seeds), the validation-loss curves
(docs/results/orthogonal_curves.png) and the reading in recipes/orthogonal/reading.md. ``--paper``
applies each YAML's ``paper:`` section (Zhu & Mak's sizes and training scheme; meant for a GPU, with
``data.train`` pointed at VoxCeleb-sized data) and records those runs as ``*_paper.json``.
"""
import sys
from pathlib import Path

from recipes import study  # run from the repository root: python -m recipes.orthogonal.run_study

HERE = Path(__file__).resolve().parent

LSTM_REGULARISERS = ("lstm_none", "lstm_so_const", "lstm_so_dec", "lstm_srip_const", "lstm_srip_dec")
TDNN_REGULARISERS = tuple(name.replace("lstm", "tdnn") for name in LSTM_REGULARISERS)
LOSSES = ("lstm_none", "lstm_ge2e_contrast", "lstm_te2e", "lstm_softmax")
REGULARISER_NAMES = {"so_const": "SO, constant λ", "so_dec": "SO, decreasing λ", "srip_const": "SRIP, constant λ",
                     "srip_dec": "SRIP, decreasing λ"}
# The papers' relative findings, from their result tables (text copies in ../shared/papers/). Zhu & Mak
# (orthogonal-e2e-sv.txt): every regulariser and schedule lowers the EER of the LSTM (Table 2) and of the
# TDNN (Table 3). Wan et al. (ge2e-wan2018.txt): text-independent GE2E 3.55 % against TE2E 4.13 % and
# softmax classification 4.06 % (Table 3; the softmax variant of GE2E, its choice for TI-SV); text-dependent
# GE2E 3.10 % against TE2E 3.55 % (Table 2; contrast is its variant for TD-SV); MultiReader helps (Tables 1
# and 2, a small keyword set helped by a far larger one: not the setting of lstm_multireader).
TABLES = {"lstm": "Table 2", "tdnn": "Table 3"}
CLAIMS = [study.Claim(f"orthogonal paper, {TABLES[arch]}: {label} helps the {arch.upper()}", f"{arch}_{name}",
                      f"{arch}_none")
          for arch in ("lstm", "tdnn") for name, label in REGULARISER_NAMES.items()] + [
    study.Claim("GE2E paper, Table 3: GE2E (softmax) beats TE2E", "lstm_none", "lstm_te2e"),
    study.Claim("GE2E paper, Table 2 (text-dependent): GE2E (contrast) beats TE2E", "lstm_ge2e_contrast", "lstm_te2e"),
    study.Claim("GE2E paper, Table 3: GE2E (softmax) beats softmax classification", "lstm_none", "lstm_softmax"),
    study.Claim("ours (MultiReader, not the GE2E paper's setting): with fsdd digits vs speechocean762 alone",
                "lstm_multireader", "lstm_none"),
]

if __name__ == "__main__":
    sys.exit(study.run_study_cli(
        study.Study("orthogonal", HERE / "systems", study.REPO / "exp" / "orthogonal"),
        "Orthogonal regularisation study (speechocean762, CPU scale)",
        "Each system trains on speechocean762/train (125 speakers) and is scored by cosine on the 114,960 "
        "speechocean762 dev trials; ± is the sample standard deviation over seeds. `lstm_none` is GE2E (softmax "
        "variant) without a regulariser.",
        [study.Table("LSTM: regularisers", LSTM_REGULARISERS),
         study.Table("TDNN (x-vector): regularisers", TDNN_REGULARISERS),
         study.Table("LSTM: losses", LOSSES), study.Table("LSTM: MultiReader", ("lstm_none", "lstm_multireader"))],
        {"LSTM": lambda s: s.startswith("lstm"), "TDNN": lambda s: s.startswith("tdnn")},
        default_seeds=(0, 1), claims=CLAIMS))
