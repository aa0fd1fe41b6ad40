"""Verbs that write run folders: ``train`` and ``fit-backend``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from voxprint.cli.core import (
    EXIT_OK,
    check_writable_folder,
    emit,
    json_option,
    load_cli_model,
    model_options,
    positive_int,
    quiet_option,
    refuse_builtin,
    thread_option,
    verb,
)
from voxprint.errors import VoxprintError


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--out", required=True, help="run folder (checkpoint, model, history)")
    p.add_argument("--data", help="training data folder (overrides data.train)")
    p.add_argument("--epochs", type=positive_int, help="override optim.epochs")
    p.add_argument("--seed", type=int, help="override seed (a resumed run must keep its seed)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the process's GPU under torchrun, else "
                                    "CUDA when available, else cpu)")
    thread_option(p)
    quiet_option(p)
    json_option(p)


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
    metric = result.metric or config["optim"]["select_by"]
    emit(args, {"out": str(result.out_dir), "epochs": result.epochs_run, "select_by": metric,
                "best": result.best_valid},
         f"trained {result.epochs_run} {result.unit}; {'best ' if result.metric is None else ''}"
         f"{metric.replace('_', ' ')} {result.best_valid:.4f}; model in {result.out_dir}")
    return EXIT_OK



def _fit_backend_args(p: argparse.ArgumentParser) -> None:
    model_options(p, required=True)
    p.add_argument("--data", help="training data folder with utt2spk (default: the model's data.train)")
    p.add_argument("--top-n", type=positive_int, default=100, help="AS-norm cohort size (default: %(default)s)")
    p.add_argument("--calibration-trials", type=positive_int, default=100_000,
                   help="trials drawn from the training speakers to fit the calibrations (default: %(default)s)")
    quiet_option(p)
    json_option(p)


@verb("fit-backend", "fit cohort, PLDA and calibrations on a model's training data",
      "voxprint fit-backend --model exp/ecapa", _fit_backend_args)
def _fit_backend(args: argparse.Namespace) -> int:
    from voxprint.backends.backend import fit_backend
    from voxprint.data import read_data_folder
    from voxprint.runs import RunLock

    refuse_builtin(args.model, "fit-backend")
    model = load_cli_model(args)
    model.require_embedding_backend("fit-backend")
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
