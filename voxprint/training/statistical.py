"""Training of the statistical models (GMM-UBM, i-vector) by EM: ``voxprint train`` on their configs.

The same run-folder contract as the neural trainer: everything (config, data folder, every audio
header) is checked before the folder is created; the folder is locked while training runs; it ends
with ``config.yaml``, ``history.json`` (one record per EM step, with its time, so the leaderboard
sums training time the same way) and ``model.pt`` (the UBM and T as buffers, hashed). There is no
checkpoint: EM on the bundled data takes minutes, and a killed run leaves no ``model.pt`` and is
simply started again.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from voxprint.audio import check_audio_files
from voxprint.config import save_config
from voxprint.data import read_data_folder
from voxprint.errors import ConfigError
from voxprint.fileio import atomic_write_text, remove_orphaned_temps
from voxprint.models import build_embedding_model
from voxprint.runs import CHECKPOINT_FILE, CONFIG_FILE, HISTORY_FILE, MODEL_FILE, RunLock
from voxprint.training.checkpoint import save_model_file

__all__ = ["is_statistical", "train_statistical"]


def is_statistical(config: dict[str, Any]) -> bool:
    """True when the config's model is trained by EM (its encoder says ``statistical = True``).

    Example:
        >>> is_statistical({"model": {"name": "ivector"}}), is_statistical({"model": {"name": "ecapa_tdnn"}})
        (True, False)
    """
    from voxprint.registry import MODELS

    return bool(getattr(MODELS.get(config["model"]["name"]), "statistical", False))


def train_statistical(config: dict[str, Any], out_dir: str | Path, resume: bool = False, progress: bool = True,
                      on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                      device: str | torch.device | None = None) -> Any:
    """Train a GMM-UBM or i-vector model into ``out_dir`` (the arguments of :func:`voxprint.training.train`).

    Raises:
        ConfigError: no training data; ``out_dir`` holds a run; ``--resume`` (EM runs are not resumed);
            a device other than the CPU.
        DataError: the data folder is malformed.
        AudioError: some of its audio files cannot be decoded.
    """
    from voxprint.inference import SpeakerModel
    from voxprint.training.trainer import TrainResult

    out_dir = Path(out_dir)
    name = config["model"]["name"]
    if resume:
        raise ConfigError(f"{name} is trained by EM in minutes and keeps no checkpoint; start it again "
                          "without --resume (in a new --out, or after deleting the folder)")
    if device not in (None, "cpu", "auto"):
        raise ConfigError(f"{name} is trained by EM in numpy on the CPU; --device {device} does not apply")
    if not config["data"].get("train"):
        raise ConfigError("no training data: set data.train in the config or pass --data")
    if (out_dir / MODEL_FILE).exists() or (out_dir / CHECKPOINT_FILE).exists():
        raise ConfigError(f"{out_dir} already holds a trained model; pick another --out")
    torch.manual_seed(config["seed"])
    model = build_embedding_model(config)
    folder = read_data_folder(config["data"]["train"])
    check_audio_files(folder.wav, f"data.train {folder.root}", max_seconds=None,
                      remedy="replace them, or remove them from wav.scp and utt2spk")
    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    with RunLock(out_dir, "train"):
        remove_orphaned_temps(out_dir)
        save_config(config, out_dir / CONFIG_FILE)
        started = time.time()
        reader = SpeakerModel(model, config, max_seconds=None)
        recordings = []
        with torch.no_grad():
            for utt in tqdm(folder.utterances, desc="features", disable=not progress, leave=False):
                wave = torch.from_numpy(reader.load_waveform(folder.wav[utt]))[None]
                recordings.append(model.encoder.frames(model.features(wave)[0]).astype(np.float32))
        history.append({"epoch": 0, "stage": "features", "seconds": time.time() - started,
                        "frames": int(sum(len(r) for r in recordings))})
        step_started = [time.time()]

        def report(stage: str, iteration: int, figure: float) -> None:
            now = time.time()
            record = {"epoch": len(history), "stage": stage, "iteration": iteration, "figure": float(figure),
                      "seconds": now - step_started[0]}
            step_started[0] = now
            history.append(record)
            atomic_write_text(out_dir / HISTORY_FILE, json.dumps(history, indent=1))
            if progress:
                print(f"{stage} iteration {iteration + 1}: {figure:.4f} ({record['seconds']:.1f}s)",
                      file=sys.stderr, flush=True)
            if on_epoch_end is not None:
                on_epoch_end(record["epoch"], record)

        model.encoder.fit(recordings, config["em"], seed=config["seed"], report=report)
        final = {"epochs": len(history) - 1, "seconds": time.time() - started, "frames": history[0]["frames"]}
        save_model_file(out_dir / MODEL_FILE, model.state_dict(), config, final)
        atomic_write_text(out_dir / HISTORY_FILE, json.dumps(history, indent=1))
    ubm_steps = [r for r in history if str(r.get("stage", "")).startswith("ubm")]
    return TrainResult(out_dir=out_dir, epochs_run=len(history) - 1,
                       best_valid=float(ubm_steps[-1]["figure"]) if ubm_steps else 0.0, history=history, model=model,
                       unit="EM steps", metric="UBM log-likelihood per frame (last step)")
