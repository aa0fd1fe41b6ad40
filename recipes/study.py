"""What the recipes' study runners share: train every system of a study (resuming), score the
speechocean762 dev trials, keep one committed JSON per finished run, and tabulate mean ± spread.

A study is a folder of system YAMLs (``recipes/<study>/systems/*.yaml``). Besides the usual config
sections a system may carry:

``paper:``
    The paper's sizes, merged over the config when the runner gets ``--paper``.
``study:``
    How the system relates to the others: ``init_from: OTHER`` starts from OTHER's trained weights
    (same seed; e.g. AM-softmax fine-tuning after a softmax warm-up) and ``clean_with: OTHER`` trains
    on the training folder cleaned by OTHER's embeddings (``voxprint clean``). OTHER is trained first.

Results go to ``docs/results/<study>.md``, runs to ``exp/<study>/<system>_seed<seed>`` and the per-run
JSONs to ``docs/results/<study>_runs/``; a run whose JSON exists (for the same number of epochs) is
not trained or scored again, so a study resumes across machines and sessions.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from voxprint.backends.scoring import cosine_score_trials
from voxprint.config import load_config
from voxprint.data import read_data_folder
from voxprint.data.cleaning import clean_data_folder
from voxprint.data.trials import read_trials
from voxprint.fileio import atomic_write_text
from voxprint.inference import SpeakerModel, load_model
from voxprint.metrics import evaluate_scores
from voxprint.paths import data_root
from voxprint.report import format_table, machine_description
from voxprint.runs import CHECKPOINT_FILE, HISTORY_FILE
from voxprint.training import train

REPO = Path(__file__).resolve().parents[1]

# Inference settings under which a run is scored besides its config's own: name -> SpeakerModel
# attributes. "full" embeds each utterance in one window (no TTA / SEA).
WHOLE_UTTERANCE = {"window_frames": 10**9, "overlap": 0.0}


@dataclass(frozen=True)
class Study:
    """One study: its systems folder and where its runs and results go."""

    name: str
    systems_dir: Path
    out_root: Path
    # Extra scorings of every run: label -> SpeakerModel attribute overrides.
    extra_scorings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    results_root: Path = REPO / "docs" / "results"

    @property
    def results_doc(self) -> Path:
        return self.results_root / f"{self.name}.md"

    @property
    def runs_dir(self) -> Path:
        return self.results_root / f"{self.name}_runs"

    def systems(self) -> list[str]:
        return sorted(p.stem for p in self.systems_dir.glob("*.yaml"))

    def raw(self, system: str) -> dict[str, Any]:
        path = self.systems_dir / f"{system}.yaml"
        if not path.is_file():
            raise SystemExit(f"no system {system!r} in {self.systems_dir} (known: {', '.join(self.systems())})")
        return yaml.safe_load(path.read_text())

    def run_dir(self, system: str, seed: int) -> Path:
        return self.out_root / f"{system}_seed{seed}"


def train_and_evaluate(study: Study, system: str, seed: int, *, paper: bool = False,
                       epochs: int | None = None) -> dict[str, Any]:
    """Train ``system`` with ``seed`` (and the systems it depends on), score it, and cache the result."""
    raw = study.raw(system)
    overrides: dict[str, Any] = dict(raw.get("paper", {})) if paper else {}
    overrides["seed"] = seed
    if epochs:
        overrides.setdefault("optim", {})["epochs"] = epochs
    path = study.systems_dir / f"{system}.yaml"
    epochs = load_config(path, overrides)["optim"]["epochs"]
    result_file = study.runs_dir / f"{system}_seed{seed}{'_paper' if paper else ''}.json"
    if result_file.is_file():
        # Checked before the dependencies: a fresh clone has the JSONs but not the runs in exp/.
        cached = json.loads(result_file.read_text())
        if cached["epochs"] == epochs:
            return cached

    relations = raw.get("study", {})
    extra: dict[str, Any] = {}
    if "init_from" in relations:
        train_and_evaluate(study, relations["init_from"], seed, paper=paper, epochs=epochs)
        overrides["init_from"] = str(study.run_dir(relations["init_from"], seed))
    if "clean_with" in relations:
        train_and_evaluate(study, relations["clean_with"], seed, paper=paper, epochs=epochs)
        cleaned, extra["cleaning"] = clean_training_folder(
            Path(load_config(path, overrides)["data"]["train"]), study.run_dir(relations["clean_with"], seed),
            study.out_root / f"train_cleaned_by_{relations['clean_with']}_seed{seed}")
        overrides.setdefault("data", {})["train"] = str(cleaned)
    config = load_config(path, overrides)

    run = study.run_dir(system, seed)
    history_file = run / HISTORY_FILE
    if (run / CHECKPOINT_FILE).exists() and json.loads(history_file.read_text())[-1]["epoch"] > epochs:
        raise SystemExit(f"{run} was trained longer than {epochs} epochs; remove it or use another --out")
    print(f"[{study.name}] training {system} (seed {seed}) in {run}", flush=True)
    train(config, run, resume=(run / CHECKPOINT_FILE).exists(), progress=False)
    history = json.loads(history_file.read_text())
    result = {"system": system, "seed": seed, "epochs": epochs,
              "description": " ".join(str(raw.get("description", "")).split()),
              **score_dev(load_model(run), study.extra_scorings), **extra,
              "train_minutes": sum(r["seconds"] for r in history) / 60,
              "train_loss": [r.get("train_loss") for r in history],
              "valid_loss": [r.get("valid_loss") for r in history]}
    study.runs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(result_file, json.dumps(result, indent=1))
    print(f"[{study.name}] {system} seed {seed}: EER {100 * result['eer']:.2f}%", flush=True)
    return result


def score_dev(model: SpeakerModel, extra_scorings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Cosine-scoring metrics on the speechocean762 dev trials: top level with the model's own
    inference settings, and one entry per extra scoring (e.g. ``{"full": {...}}``)."""
    dev = data_root() / "speechocean762" / "dev"
    trials = read_trials(dev / "trials.txt")

    def metrics(model: SpeakerModel) -> dict[str, float]:
        embedded = model.embed_folder(dev, progress=False)
        return evaluate_scores(cosine_score_trials(embedded.ids, embedded.embeddings, trials),
                               trials.labels).to_dict()

    result = metrics(model)
    for label, settings in extra_scorings.items():
        result[label] = metrics(model.with_inference(**settings))
    return result


def clean_training_folder(train_dir: Path, model_dir: Path, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``voxprint clean`` of ``train_dir`` with the model in ``model_dir`` (the paper's thresholds)."""
    if not (out_dir / "wav.scp").is_file():
        clean_data_folder(read_data_folder(train_dir), load_model(model_dir), out_dir)
    kept = len(read_data_folder(out_dir))
    total = len(read_data_folder(train_dir))
    return out_dir, {"removed": total - kept, "utterances": total, "folder": str(out_dir.relative_to(REPO))
                     if out_dir.is_relative_to(REPO) else str(out_dir)}


def mean_spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """"mean ± sample standard deviation" over seeds, or the single value."""
    array = np.asarray(values, dtype=float) * scale
    if len(array) > 1:
        return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"
    return f"{array[0]:.{digits}f}"


@dataclass(frozen=True)
class Claim:
    """A relative finding of a paper to check: ``better`` has a lower EER than ``worse``. Each side is a
    system, optionally with an extra scoring (``"system:full"``)."""

    finding: str
    better: str
    worse: str


def _eers(results: list[dict[str, Any]], side: str) -> np.ndarray:
    system, _, scoring = side.partition(":")
    return np.array([100 * (r[scoring] if scoring else r)["eer"] for r in results if r["system"] == system])


def seed_noise(results: list[dict[str, Any]]) -> float | None:
    """Typical seed-to-seed EER spread (percentage points): the median sample standard deviation over
    the systems run with several seeds, or None when none was."""
    spreads = [np.std([100 * r["eer"] for r in runs], ddof=1) for runs in group_by_system(results).values()
               if len(runs) > 1]
    return float(np.median(spreads)) if spreads else None


_PLACEHOLDER = re.compile(r"\{\{(eer|dcf2|dcf3) ([\w.:-]+)\}\}")


def expand_reading(text: str, results: list[dict[str, Any]]) -> str:
    """A reading with its figures filled in from the runs, so none is typed by hand: ``{{eer SYSTEM}}``
    is the EER % (mean ± seed spread, as the tables print it), ``{{dcf2 SYSTEM}}`` and ``{{dcf3 SYSTEM}}``
    the mean minDCF at p = 0.01 and 0.001; ``SYSTEM:SCORING`` picks an extra scoring (e.g. ``:full``).
    A system without runs reads "n/a".

    Example:
        >>> runs = [{"system": "a", "eer": 0.1, "min_dcf_0.01": 0.5, "min_dcf_0.001": 0.9},
        ...         {"system": "a", "eer": 0.12, "min_dcf_0.01": 0.7, "min_dcf_0.001": 0.9}]
        >>> expand_reading("EER {{eer a}}, DCF {{dcf2 a}}, {{eer b}}", runs)
        'EER 11.00 ± 1.41, DCF 0.600, n/a'
    """
    def figure(match: re.Match) -> str:
        kind, side = match.groups()
        system, _, scoring = side.partition(":")
        picked = [r[scoring] if scoring else r for r in results if r["system"] == system]
        if not picked:
            return "n/a"
        if kind == "eer":
            return mean_spread([m["eer"] for m in picked], 100)
        key = "min_dcf_0.01" if kind == "dcf2" else "min_dcf_0.001"
        return f"{np.mean([m[key] for m in picked]):.3f}"

    return _PLACEHOLDER.sub(figure, text)


def claims_table(results: list[dict[str, Any]], claims: list[Claim]) -> str:
    """Markdown table: for each claim the two mean EERs, the difference and a verdict. A difference
    counts only beyond twice the seed spread (the larger of the two systems' spreads, where a system run
    with one seed counts with the study's typical spread): "holds", "reversed" or "within seed spread",
    the last qualified when every seed of one system beat every seed of the other."""
    typical = seed_noise(results)
    rows = []
    for claim in claims:
        better, worse = _eers(results, claim.better), _eers(results, claim.worse)
        if not len(better) or not len(worse):
            continue
        # The larger spread that applies: a side's own over its seeds, the study's typical one for a
        # side that ran a single seed.
        spreads = [np.std(x, ddof=1) if len(x) > 1 else typical for x in (better, worse)]
        noise = max((x for x in spreads if x is not None), default=None)
        gain = worse.mean() - better.mean()
        if noise is None:
            verdict = ("holds" if gain > 0 else "reversed") + " (one seed, spread unknown)"
        elif abs(gain) > 2 * noise:
            verdict = "holds" if gain > 0 else "reversed"
        elif len(better) > 1 and len(worse) > 1 and (better.max() < worse.min() or better.min() > worse.max()):
            # Too noisy to call on the means, yet every seed of one side beat every seed of the other.
            verdict = f"within seed spread, but {'better' if gain > 0 else 'worse'} in every seed"
        else:
            verdict = "within seed spread"
        rows.append([claim.finding, claim.better, claim.worse, f"{better.mean():.2f}", f"{worse.mean():.2f}",
                     f"{gain:+.2f}", "—" if noise is None else f"{noise:.2f}", verdict])
    return format_table(["finding (source)", "better", "worse", "EER % (better)", "EER % (worse)", "gain (pp)",
                         "seed spread (pp)", "here"], rows)


def group_by_system(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        grouped.setdefault(result["system"], []).append(result)
    return grouped


def metrics_table(results: list[dict[str, Any]], scoring: str | None = None) -> str:
    """Markdown table, one row per system: seeds, EER %, minDCF 0.01 / 0.001 (mean ± std over seeds)
    and training minutes. ``scoring`` picks an extra scoring's metrics instead of the top level."""
    rows = []
    for system, runs in group_by_system(results).items():
        picked = [r[scoring] if scoring else r for r in runs]
        rows.append([system, runs[0]["description"], len(runs), mean_spread([m["eer"] for m in picked], 100),
                     mean_spread([m["min_dcf_0.01"] for m in picked], digits=3),
                     mean_spread([m["min_dcf_0.001"] for m in picked], digits=3),
                     mean_spread([r["train_minutes"] for r in runs], digits=1)])
    return format_table(["system", "what", "seeds", "EER %", "minDCF 0.01", "minDCF 0.001", "training (min)"], rows)


def plot_loss_curves(results: list[dict[str, Any]], path: Path, panels: Mapping[str, Callable[[str], bool]],
                     key: str = "valid_loss") -> None:
    """One panel per entry of ``panels`` (title -> which systems it shows), ``key`` per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (title, shows) in zip(axes[0], panels.items(), strict=True):
        for result in results:
            if shows(result["system"]):
                values = [np.nan if v is None else v for v in result[key]]
                ax.plot(values, label=f"{result['system']} s{result['seed']}", linewidth=1)
        ax.set_title(f"{title}: {key.replace('_', ' ')} per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("_", " "))
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class Table:
    """One results table of a study document: a heading, the systems it shows (all when None), and
    which scoring's metrics (the top level when None)."""

    heading: str
    systems: tuple[str, ...] | None = None
    scoring: str | None = None


def run_study_cli(study: Study, title: str, intro: str, tables: list[Table],
                  panels: Mapping[str, Callable[[str], bool]], curve_key: str = "valid_loss",
                  default_seeds: tuple[int, ...] = (0,), argv: list[str] | None = None,
                  notes: Callable[[list[dict[str, Any]]], str] | None = None,
                  claims: list[Claim] | None = None) -> int:
    """The command line every study runner offers: train and score the chosen systems and seeds
    (resuming), then write ``docs/results/<study>.md`` with ``tables``, the loss curves PNG and the
    study's hand-written reading (``recipes/<study>/reading.md``) when present. ``notes`` turns the
    results into extra text placed after the tables; ``claims`` are the papers' relative findings to
    check (:func:`claims_table`)."""
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--systems", nargs="*", default=study.systems(), help="systems to run (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=list(default_seeds))
    parser.add_argument("--paper", action="store_true", help="apply each YAML's paper: section (GPU-sized)")
    parser.add_argument("--epochs", type=int, help="override every system's optim.epochs")
    parser.add_argument("--out", default=str(study.out_root), help="where the training runs go")
    args = parser.parse_args(argv)
    study = dataclasses.replace(study, out_root=Path(args.out))
    results = [train_and_evaluate(study, name, seed, paper=args.paper, epochs=args.epochs)
               for name in args.systems for seed in args.seeds]
    # Runs of other seeds finished earlier (e.g. a second seed of a few systems) join the tables.
    known = {(r["system"], r["seed"]) for r in results}
    for path in sorted(study.runs_dir.glob("*.json")):
        cached = json.loads(path.read_text())
        if cached["system"] in args.systems and (cached["system"], cached["seed"]) not in known \
                and not path.stem.endswith("_paper") and not args.paper:
            results.append(cached)
    results.sort(key=lambda r: (args.systems.index(r["system"]), r["seed"]))

    curves = study.results_doc.with_name(f"{study.name}_curves.png")
    plot_loss_curves(results, curves, panels, key=curve_key)
    command = " ".join([f"python -m recipes.{study.name}.run_study"] + argv)
    parts = [f"# {title}", "", f"Command: `{command}`. Machine: {machine_description()}.", "", intro, ""]
    for table in tables:
        shown = [r for r in results if table.systems is None or r["system"] in table.systems]
        if table.systems is not None:  # rows in the table's own order
            shown.sort(key=lambda r: table.systems.index(r["system"]))
        if shown:
            parts += [f"## {table.heading}", "", metrics_table(shown, table.scoring), ""]
    if notes is not None:
        parts += [notes(results), ""]
    if claims:
        parts += ["## Which relative findings hold here", "",
                  "A finding holds when the first system's EER is lower by more than twice the seed spread "
                  "(the larger of the two systems' spreads over their seeds; a system run with one seed counts "
                  "with the study's median spread); "
                  "pp = percentage points.", "", claims_table(results, claims), ""]
    parts += [f"![{curve_key.replace('_', ' ')}]({curves.name})", ""]
    reading = study.systems_dir.parent / "reading.md"
    if reading.is_file():
        parts.append(expand_reading(reading.read_text(), results))
    text = "\n".join(parts)
    atomic_write_text(study.results_doc, text)
    print(text)
    return 0
