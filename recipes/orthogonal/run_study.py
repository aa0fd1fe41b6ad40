#!/usr/bin/env python3
"""The orthogonal-regularisation study in one command (CPU-sized by default).

Finished runs are recorded in docs/results/orthogonal_runs/ and not trained again.

    .venv/bin/python recipes/orthogonal/run_study.py [--seeds 0 1] [--systems lstm_none tdnn_so_dec ...]
                                                      [--paper] [--epochs N] [--out exp/orthogonal]

Trains every system of recipes/orthogonal/systems/ (resuming finished or interrupted runs), evaluates
each on the speechocean762 dev trials with cosine scoring, and writes docs/results/orthogonal.md with
EER, minDCF (0.01, 0.001) and training time per system (mean and spread over seeds), plus the
validation-loss curves as docs/results/orthogonal_curves.png. ``--paper`` applies each YAML's
``paper:`` section (the paper's sizes; meant for a GPU and VoxCeleb-sized data).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench.common import format_table, machine_description  # noqa: E402
from voxprint.backends import cosine_score_trials, read_trials  # noqa: E402
from voxprint.config import load_config  # noqa: E402
from voxprint.fileio import atomic_write_text  # noqa: E402
from voxprint.inference import load_model  # noqa: E402
from voxprint.metrics import evaluate_scores  # noqa: E402
from voxprint.paths import data_root  # noqa: E402
from voxprint.training import train  # noqa: E402

SYSTEMS_DIR = Path(__file__).resolve().parent / "systems"
RESULTS = REPO / "docs" / "results" / "orthogonal.md"
# One JSON per finished run, committed, so the study resumes across machines and sessions.
RUN_RESULTS = REPO / "docs" / "results" / "orthogonal_runs"


def run_system(name: str, seed: int, out_root: Path, paper: bool, epochs: int | None) -> dict:
    raw = yaml.safe_load((SYSTEMS_DIR / f"{name}.yaml").read_text())
    overrides = dict(raw.get("paper", {})) if paper else {}
    overrides["seed"] = seed
    if epochs:
        overrides.setdefault("optim", {})["epochs"] = epochs
    config = load_config(SYSTEMS_DIR / f"{name}.yaml", overrides)
    run = out_root / f"{name}_seed{seed}"
    result_file = RUN_RESULTS / f"{name}_seed{seed}{'_paper' if paper else ''}.json"
    if result_file.is_file():
        cached = json.loads(result_file.read_text())
        if cached["epochs"] == config["optim"]["epochs"]:
            return cached
    if (run / "checkpoint.pt").exists() and json.loads((run / "history.json").read_text())[-1]["epoch"] > config["optim"]["epochs"]:
        raise SystemExit(f"{run} was trained longer than {config['optim']['epochs']} epochs; remove it or use another --out")
    train(config, run, resume=(run / "checkpoint.pt").exists(), progress=False)
    model = load_model(run)
    dev = data_root() / "speechocean762" / "dev"
    trials = read_trials(dev / "trials.txt")
    ids, matrix = model.embed_folder(dev, progress=False)
    metrics = evaluate_scores(cosine_score_trials(ids, matrix, trials), trials.labels).to_dict()
    history = json.loads((run / "history.json").read_text())
    result = {"system": name, "seed": seed, "epochs": config["optim"]["epochs"],
              "description": raw.get("description", ""), **metrics,
              "train_minutes": sum(r["seconds"] for r in history) / 60,
              "valid_loss": [r.get("valid_loss") for r in history]}
    RUN_RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(result_file, json.dumps(result, indent=1))
    return result


def plot_curves(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    for result in results:
        arch = 0 if result["system"].startswith("lstm") else 1
        axes[arch].plot(result["valid_loss"], label=f"{result['system']} s{result['seed']}", linewidth=1)
    for ax, title in zip(axes, ("LSTM", "TDNN")):
        ax.set_title(f"{title}: validation loss per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def summarise(results: list[dict]) -> str:
    by_system: dict[str, list[dict]] = {}
    for result in results:
        by_system.setdefault(result["system"], []).append(result)
    rows = []
    for name, runs in by_system.items():
        def stat(key: str, scale: float = 1.0) -> str:
            values = np.array([r[key] for r in runs]) * scale
            return f"{values.mean():.2f} ± {values.std():.2f}" if len(values) > 1 else f"{values[0]:.2f}"
        rows.append([name, runs[0]["description"], len(runs), stat("eer", 100), stat("min_dcf_0.01"),
                     stat("min_dcf_0.001"), stat("train_minutes")])
    return format_table(["system", "what", "seeds", "EER %", "minDCF 0.01", "minDCF 0.001", "training (min)"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="*", default=sorted(p.stem for p in SYSTEMS_DIR.glob("*.yaml")))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--paper", action="store_true")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--out", default=str(REPO / "exp" / "orthogonal"))
    parser.add_argument("--doc", default=str(RESULTS), help="results markdown (the curves PNG goes beside it)")
    args = parser.parse_args()
    results = [run_system(name, seed, Path(args.out), args.paper, args.epochs)
               for name in args.systems for seed in args.seeds]
    doc = Path(args.doc)
    plot_curves(results, doc.with_name("orthogonal_curves.png"))
    command = " ".join(["python recipes/orthogonal/run_study.py"] + sys.argv[1:])
    text = "\n".join([
        "# Orthogonal regularisation study (speechocean762, CPU scale)", "",
        f"Command: `{command}`. Machine: {machine_description()}.", "",
        "Each system trains on speechocean762/train (125 speakers) and is scored by cosine on the 114,960 "
        "speechocean762 dev trials; ± is the standard deviation over seeds.", "",
        summarise(results), "",
        "![validation loss](orthogonal_curves.png)", ""])
    atomic_write_text(doc, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
