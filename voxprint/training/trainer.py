"""The training loop: GE2E-style batches, SGD, gradient clipping, LR halving on plateau, early stopping,
an atomic checkpoint every epoch and exact resume. Runs unchanged under ``torchrun`` (DDP)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import voxprint.losses  # noqa: F401  (registers losses)
from voxprint.config import save_config
from voxprint.data import GE2EBatchSampler, read_data_folder
from voxprint.data.dataset import CropDataset, collate_crops
from voxprint.errors import ConfigError
from voxprint.models import build_embedding_model
from voxprint.registry import LOSSES
from voxprint.training.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, MODEL_NAME, atomic_save, load_file
from voxprint.training.distributed import DistributedContext


class TrainingStep(nn.Module):
    """Model + loss in one module, so DDP synchronises the loss's own parameters (GE2E's w, b) too."""

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, waves: torch.Tensor, labels: torch.Tensor, n_speakers: int) -> torch.Tensor:
        return self.loss(self.model(waves), n_speakers=n_speakers, labels=labels)


@dataclass
class PlateauState:
    """LR halving and early stopping on the validation loss."""

    best: float = math.inf
    bad_epochs: int = 0
    epochs_since_best: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's validation loss; True when it is a new best."""
        if value < self.best - 1e-6:
            self.best, self.bad_epochs, self.epochs_since_best = value, 0, 0
            return True
        self.bad_epochs += 1
        self.epochs_since_best += 1
        return False


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    best_valid_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None  # final weights (the best-validation weights are in model.pt)


def _loader(dataset: CropDataset, sampler: GE2EBatchSampler, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_crops, num_workers=workers,
                      persistent_workers=False)


def train(config: dict[str, Any], out_dir: str | Path, resume: bool = False, progress: bool = True,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the model described by ``config`` into ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (everything needed to resume, rewritten each epoch),
    ``model.pt`` (best-validation weights), ``config.yaml`` and ``history.json``.
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written.
    """
    ctx = DistributedContext.from_env()
    out_dir = Path(out_dir)
    data_cfg, optim_cfg = config["data"], config["optim"]
    if not data_cfg.get("train"):
        raise ConfigError("no training data: set data.train in the config or pass --data")
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if checkpoint_path.exists() and not resume:
        raise ConfigError(f"{out_dir} already holds a training run; pass --resume to continue it or pick another --out")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / CONFIG_NAME)

    torch.manual_seed(config["seed"])
    device = ctx.device()
    model = build_embedding_model(config)
    loss_options = {k: v for k, v in config["loss"].items() if k != "name"}
    loss_fn = LOSSES.build(config["loss"]["name"], **loss_options)
    step_module = TrainingStep(model, loss_fn).to(device)
    optimizer = torch.optim.SGD(
        [{"params": model.parameters(), "lr_scale": 1.0},
         {"params": loss_fn.parameters(), "lr_scale": optim_cfg["loss_lr_scale"]}],
        lr=optim_cfg["lr"], momentum=optim_cfg["momentum"], weight_decay=optim_cfg["weight_decay"])
    for group in optimizer.param_groups:
        group["lr"] = optim_cfg["lr"] * group["lr_scale"]
    runner = nn.parallel.DistributedDataParallel(step_module) if ctx.enabled else step_module

    folder = read_data_folder(data_cfg["train"])
    train_folder, valid_folder = folder.split_validation(data_cfg["valid_fraction"], seed=config["seed"])
    samples_for = model.frontend.num_samples
    vad = config["vad"]["threshold_db"] if config["vad"]["enabled"] else None
    train_set = CropDataset(train_folder, config["sample_rate"], samples_for, vad_threshold_db=vad)
    valid_set = CropDataset(valid_folder, config["sample_rate"], samples_for, vad_threshold_db=vad)
    n, m = data_cfg["speakers_per_batch"], data_cfg["utterances_per_speaker"]
    sampler = GE2EBatchSampler(train_set.speaker_utterances(), n, m, data_cfg["crop_frames"],
                               data_cfg["batches_per_epoch"], seed=config["seed"], rank=ctx.rank,
                               world_size=ctx.world_size)
    valid_groups = [g for g in valid_set.speaker_utterances() if g]
    valid_n = min(n, len(valid_groups))
    valid_m = min(m, min(len(g) for g in valid_groups)) if valid_groups else 0
    valid_sampler = None
    if valid_n >= 2 and valid_m >= 2:
        middle = sum(data_cfg["crop_frames"]) // 2
        valid_sampler = GE2EBatchSampler(valid_groups, valid_n, valid_m, (middle, middle),
                                         data_cfg["valid_batches"], seed=config["seed"] + 10_000)

    plateau = PlateauState()
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and checkpoint_path.exists():
        state = load_file(checkpoint_path)
        step_module.load_state_dict(state["step"])
        optimizer.load_state_dict(state["optimizer"])
        plateau = PlateauState(**state["plateau"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])

    if not history and valid_sampler is not None:
        # Epoch 0 records the untrained model's validation loss: the chance level training must beat.
        history.append({"epoch": 0, "train_loss": None, "valid_loss": evaluate_loss(
            step_module, valid_set, valid_sampler, valid_n, device), "lr": optim_cfg["lr"], "best": False,
            "seconds": 0.0, "stop": False})
    stopped_early = bool(history and history[-1].get("stop"))
    for epoch in range(start_epoch, optim_cfg["epochs"]):
        if stopped_early:
            break
        started = time.time()
        sampler.set_epoch(epoch)
        step_module.train()
        total, count = 0.0, 0
        bar = tqdm(_loader(train_set, sampler, data_cfg["num_workers"]), total=len(sampler),
                   desc=f"epoch {epoch + 1}/{optim_cfg['epochs']}", disable=not (progress and ctx.is_main),
                   leave=False)
        for waves, labels in bar:
            loss = runner(waves.to(device), labels.to(device), n)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(step_module.parameters(), optim_cfg["clip_grad_norm"])
            optimizer.step()
            total += float(loss.item())
            count += 1
            bar.set_postfix(loss=f"{total / count:.3f}")
        train_loss = ctx.mean(total / max(count, 1))
        valid_loss = evaluate_loss(step_module, valid_set, valid_sampler, valid_n, device) if valid_sampler else train_loss

        improved = plateau.update(valid_loss)
        lr = optimizer.param_groups[0]["lr"]
        if plateau.bad_epochs >= optim_cfg["lr_patience"]:
            lr = max(lr * optim_cfg["lr_factor"], optim_cfg["min_lr"])
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            plateau.bad_epochs = 0
        stop = plateau.epochs_since_best >= optim_cfg["early_stop_patience"]
        record = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss, "lr": lr,
                  "best": improved, "seconds": round(time.time() - started, 2), "stop": stop}
        history.append(record)
        if ctx.is_main:
            if improved:
                save_model(out_dir / MODEL_NAME, model, config, record)
            atomic_save({"step": step_module.state_dict(), "optimizer": optimizer.state_dict(),
                         "plateau": plateau.__dict__, "history": history, "epoch": epoch,
                         "torch_rng": torch.get_rng_state()}, checkpoint_path)
            (out_dir / "history.json").write_text(json.dumps(history, indent=1))
            if progress:
                print(f"epoch {epoch + 1}: train {train_loss:.4f} valid {valid_loss:.4f} lr {lr:.2e}"
                      f"{' *' if improved else ''} ({record['seconds']:.0f}s)", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if stop:
            break
    ctx.close()
    return TrainResult(out_dir=out_dir, epochs_run=sum(1 for r in history if r["epoch"] > 0), best_valid_loss=plateau.best, history=history,
                       model=model)


@torch.no_grad()
def evaluate_loss(step_module: TrainingStep, dataset: CropDataset, sampler: GE2EBatchSampler, n_speakers: int,
                  device: torch.device) -> float:
    """Mean loss over a fixed set of validation batches (same crops every epoch)."""
    step_module.eval()
    losses = [float(step_module(waves.to(device), labels.to(device), n_speakers))
              for waves, labels in _loader(dataset, sampler, 0)]
    step_module.train()
    return sum(losses) / len(losses)


def save_model(path: Path, model: nn.Module, config: dict[str, Any], record: dict[str, Any]) -> None:
    """The inference file: config + weights, no optimiser state."""
    atomic_save({"config": config, "state_dict": model.state_dict(), "trained": record}, path)
