"""The training loop: N x M speaker batches, SGD/Adam, gradient clipping, LR halving on plateau or
warm-up + cosine decay, early stopping, an atomic checkpoint every epoch and exact resume.
Runs unchanged under ``torchrun`` (DDP)."""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import voxprint.losses  # noqa: F401  (registers losses)
from voxprint.config import save_config
from voxprint.data import DataFolder, GE2EBatchSampler, read_data_folder
from voxprint.data.dataset import CropDataset, collate_crops
from voxprint.errors import ConfigError
from voxprint.fileio import atomic_write_text
from voxprint.metrics import compute_eer
from voxprint.models import EmbeddingModel, build_embedding_model
from voxprint.registry import LOSSES
from voxprint.training.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, MODEL_NAME, atomic_save, load_file
from voxprint.training.distributed import DistributedContext


class TrainingStep(nn.Module):
    """Model + loss (+ optional SpecAugment) in one module, so DDP synchronises the loss's own
    parameters (GE2E's w and b, a classifier's weights) along with the model's."""

    def __init__(self, model: EmbeddingModel, loss: nn.Module, spec_augment: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.loss = loss
        self.spec_augment = spec_augment

    def forward(self, waves: torch.Tensor, labels: torch.Tensor, n_speakers: int) -> torch.Tensor:
        feats = self.model.features(waves)
        if self.spec_augment is not None:
            feats = self.spec_augment(feats)
        return self.loss(self.model.encode(feats), n_speakers=n_speakers, labels=labels)


@dataclass
class PlateauState:
    """Validation-loss bookkeeping for LR halving and early stopping."""

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
    best_valid: float  # best value of the selection metric (optim.select_by)
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None  # final weights (the best-validation weights are in model.pt)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"],
                                               weight_decay=cfg["weight_decay"]),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                                 amsgrad=cfg.get("amsgrad", False)),
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                                   amsgrad=cfg.get("amsgrad", False)),
}


def build_optimizer(cfg: dict[str, Any], model: nn.Module, loss_fn: nn.Module) -> torch.optim.Optimizer:
    if cfg["name"] not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg['name']!r}; known: {sorted(OPTIMIZERS)}")
    groups = [{"params": list(model.parameters()), "lr_scale": 1.0},
              {"params": list(loss_fn.parameters()), "lr_scale": cfg["loss_lr_scale"]}]
    optimizer = OPTIMIZERS[cfg["name"]]([g for g in groups if g["params"]], cfg)
    set_lr(optimizer, cfg["lr"])
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def scheduled_lr(cfg: dict[str, Any], progress: float) -> float:
    """Learning rate of the "cosine" schedule at ``progress`` epochs: linear warm-up, cosine decay."""
    warmup, total = cfg["warmup_epochs"], cfg["epochs"]
    if progress < warmup:
        return cfg["lr"] * (progress + 1e-3) / warmup
    span = max(total - warmup, 1e-9)
    return cfg["min_lr"] + 0.5 * (cfg["lr"] - cfg["min_lr"]) * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / span)))


def build_loss(config: dict[str, Any], embedding_dim: int, num_classes: int) -> nn.Module:
    options = {k: v for k, v in config["loss"].items() if k != "name"}
    loss_class = LOSSES.get(config["loss"]["name"])
    if getattr(loss_class, "needs_labels", False):
        options.update(embedding_dim=embedding_dim, num_classes=num_classes)
    return LOSSES.build(config["loss"]["name"], **options)


@dataclass
class Source:
    """One training data source of a (MultiReader) run: its crops, its batches and its loss weight."""

    name: str
    dataset: CropDataset
    sampler: GE2EBatchSampler
    weight: float


def build_sources(config: dict[str, Any], train_set: CropDataset, model: EmbeddingModel,
                  ctx: DistributedContext) -> list[Source]:
    """The primary source (data.train) plus any ``data.sources`` (MultiReader, GE2E paper section 2.3).

    Each extra source gives one batch per step and its own weighted loss; its entries override
    the primary's batch settings (e.g. fewer speakers per batch for a small set).
    """
    data_cfg = config["data"]
    sources = []
    extra = data_cfg["sources"]
    if extra and getattr(LOSSES.get(config["loss"]["name"]), "needs_labels", False):
        raise ConfigError("MultiReader (data.sources) needs a loss without speaker classes, e.g. ge2e or te2e")
    for index, spec in enumerate([{"train": data_cfg["train"], "weight": data_cfg["weight"]}] + list(extra)):
        settings = {**data_cfg, **spec}
        if index == 0:
            dataset = train_set
        else:
            dataset = CropDataset(read_data_folder(settings["train"]), config["sample_rate"],
                                  model.frontend.num_samples, augment=config["augment"])
        sampler = GE2EBatchSampler(dataset.speaker_utterances(), settings["speakers_per_batch"],
                                   settings["utterances_per_speaker"], settings["crop_frames"],
                                   data_cfg["batches_per_epoch"] or (None if index == 0 else len(sources[0].sampler)),
                                   seed=config["seed"] + 1000 * index, rank=ctx.rank, world_size=ctx.world_size)
        sources.append(Source(Path(settings["train"]).name, dataset, sampler, float(settings["weight"])))
    return sources


def build_datasets(config: dict[str, Any], model: EmbeddingModel) -> tuple[CropDataset, CropDataset]:
    data_cfg = config["data"]
    folder: DataFolder = read_data_folder(data_cfg["train"])
    train_folder, valid_folder = folder.split_validation(data_cfg["valid_fraction"], seed=config["seed"])
    common = dict(sample_rate=config["sample_rate"], samples_for_frames=model.frontend.num_samples,
                  speakers=train_folder.speakers,
                  vad_threshold_db=config["vad"]["threshold_db"] if config["vad"]["enabled"] else None)
    train_set = CropDataset(train_folder, augment=config["augment"], **common)
    return train_set, CropDataset(valid_folder, **common)


def validation_sampler(config: dict[str, Any], valid_set: CropDataset) -> GE2EBatchSampler | None:
    """Fixed validation batches (same crops every epoch); None when validation is off (valid_fraction 0)."""
    data_cfg = config["data"]
    groups = [g for g in valid_set.speaker_utterances() if g]
    n = min(data_cfg["speakers_per_batch"], len(groups))
    m = min(data_cfg["utterances_per_speaker"], min((len(g) for g in groups), default=0))
    if data_cfg["valid_fraction"] <= 0:
        return None
    if n < 2 or m < 2:
        raise ConfigError(f"data.valid_fraction {data_cfg['valid_fraction']} holds out fewer than 2 utterances of 2 "
                          "speakers for validation; raise it, or set it to 0 to train without validation")
    middle = sum(data_cfg["crop_frames"]) // 2
    return GE2EBatchSampler(groups, n, m, (middle, middle), data_cfg["valid_batches"], seed=config["seed"] + 10_000)


def _loader(dataset: CropDataset, sampler: GE2EBatchSampler, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_crops, num_workers=workers)


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
    train_set, valid_set = build_datasets(config, model)
    loss_fn = build_loss(config, model.encoder.embedding_dim, train_set.num_classes)
    spec_augment = build_spec_augment(config["specaugment"])
    step_module = TrainingStep(model, loss_fn, spec_augment).to(device)
    optimizer = build_optimizer(optim_cfg, model, loss_fn)
    runner = nn.parallel.DistributedDataParallel(step_module) if ctx.enabled else step_module
    sources = build_sources(config, train_set, model, ctx)
    valid_sampler = validation_sampler(config, valid_set)
    regularizer = build_regularizer(config["regularizer"], optim_cfg["epochs"])

    plateau, history, start_epoch, lr = PlateauState(), [], 0, optim_cfg["lr"]
    if config["init_from"] and not (resume and checkpoint_path.exists()):
        initialise_from(step_module, Path(config["init_from"]) / CHECKPOINT_NAME)
    if resume and checkpoint_path.exists():
        state = load_file(checkpoint_path)
        step_module.load_state_dict(state["step"])
        optimizer.load_state_dict(state["optimizer"])
        plateau, history = PlateauState(**state["plateau"]), state["history"]
        start_epoch, lr = state["epoch"] + 1, history[-1]["lr"]
        torch.set_rng_state(state["torch_rng"])
    if not history and valid_sampler is not None:
        # Epoch 0 records the untrained model's validation loss: the chance level training must beat.
        history.append({"epoch": 0, "train_loss": None, **validate(step_module, valid_set, valid_sampler, device),
                        "lr": lr, "best": False, "seconds": 0.0, "stop": False})

    for epoch in range(start_epoch, optim_cfg["epochs"]):
        if history and history[-1]["stop"]:
            break
        started = time.time()
        for source in sources:
            source.sampler.set_epoch(epoch)
        if hasattr(loss_fn, "set_epoch"):
            loss_fn.set_epoch(epoch)
        step_module.train()
        total, count, steps = 0.0, 0, len(sources[0].sampler)
        loaders = [_loader(source.dataset, source.sampler, data_cfg["num_workers"]) for source in sources]
        bar = tqdm(zip(*loaders), total=steps, desc=f"epoch {epoch + 1}/{optim_cfg['epochs']}",
                   disable=not (progress and ctx.is_main), leave=False)
        for batches in bar:
            if optim_cfg["schedule"] == "cosine":
                lr = scheduled_lr(optim_cfg, epoch + count / steps)
                set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            loss = train_step(runner, sources, batches, device, ctx.enabled,
                              regularizer(step_module, epoch) if regularizer else None)
            nn.utils.clip_grad_norm_(step_module.parameters(), optim_cfg["clip_grad_norm"])
            optimizer.step()
            total, count = total + loss, count + 1
            bar.set_postfix(loss=f"{total / count:.3f}")
        train_loss = ctx.mean(total / max(count, 1))
        if valid_sampler is not None:
            valid = validate(step_module, valid_set, valid_sampler, device)
            improved = plateau.update(valid[optim_cfg["select_by"]])
        else:  # no held-out data (valid_fraction 0): keep the last epoch, stop only at optim.epochs
            valid, improved = {}, True
        if optim_cfg["schedule"] == "plateau" and plateau.bad_epochs >= optim_cfg["lr_patience"]:
            lr = max(lr * optim_cfg["lr_factor"], optim_cfg["min_lr"])
            set_lr(optimizer, lr)
            plateau.bad_epochs = 0
        stop = plateau.epochs_since_best >= optim_cfg["early_stop_patience"]
        record = {"epoch": epoch + 1, "train_loss": train_loss, **valid, "lr": lr,
                  "best": improved, "seconds": round(time.time() - started, 2), "stop": stop}
        if regularizer is not None:
            record["regularizer_lambda"] = regularizer.schedule.value_at(epoch)
        history.append(record)
        if ctx.is_main:
            if improved:
                save_model(out_dir / MODEL_NAME, model, config, record)
            atomic_save({"step": step_module.state_dict(), "optimizer": optimizer.state_dict(),
                         "plateau": plateau.__dict__, "history": history, "epoch": epoch,
                         "torch_rng": torch.get_rng_state()}, checkpoint_path)
            atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
            if progress:
                shown = "  ".join(f"{k} {v:.4f}" for k, v in valid.items())
                print(f"epoch {epoch + 1}: train_loss {train_loss:.4f}  {shown}  lr {lr:.2e}"
                      f"{' *' if improved else ''} ({record['seconds']:.0f}s)", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    ctx.close()
    return TrainResult(out_dir=out_dir, epochs_run=sum(1 for r in history if r["epoch"] > 0),
                       best_valid=plateau.best, history=history, model=model)


def train_step(runner: nn.Module, sources: list[Source], batches: tuple, device: torch.device, distributed: bool,
               regularizer_loss: torch.Tensor | None) -> float:
    """Backpropagate sum_k weight_k * loss(batch_k) (+ regulariser); returns the total loss value.

    Each source is backpropagated on its own (same gradient as the sum, less memory); under DDP the
    gradients are synchronised once, on the last source.
    """
    total = 0.0
    for index, (source, (waves, labels)) in enumerate(zip(sources, batches)):
        last = index == len(sources) - 1
        with runner.no_sync() if distributed and not last else nullcontext():
            loss = source.weight * runner(waves.to(device), labels.to(device), source.sampler.n_speakers)
            if last and regularizer_loss is not None:
                loss = loss + regularizer_loss
            loss.backward()
        total += float(loss.item())
    return total


def build_regularizer(options: dict[str, Any], total_epochs: int):
    if not options:
        return None
    from voxprint.losses.orthogonal import OrthogonalRegularizer

    return OrthogonalRegularizer.from_config(options, total_epochs)


def initialise_from(step_module: TrainingStep, checkpoint: Path) -> list[str]:
    """Copy every tensor of a previous run whose name and shape match; returns the names skipped.

    The embedder must match exactly (a fine-tuning run keeps the architecture); loss parameters
    are copied when compatible, so an AM-softmax stage starts from the warm-up's classifier.
    """
    source = load_file(checkpoint)["step"]
    target = step_module.state_dict()
    skipped = [k for k in target if k not in source or source[k].shape != target[k].shape]
    if any(k.startswith("model.") for k in skipped):
        raise ConfigError(f"init_from {checkpoint.parent}: its model differs from this config's "
                          f"(first mismatch: {next(k for k in skipped if k.startswith('model.'))})")
    step_module.load_state_dict({k: v for k, v in source.items() if k in target and k not in skipped}, strict=False)
    return skipped


def build_spec_augment(options: dict[str, Any]) -> nn.Module | None:
    if not options:
        return None
    from voxprint.features.specaugment import SpecAugment

    return SpecAugment(**options)


@torch.no_grad()
def validate(step_module: TrainingStep, dataset: CropDataset, sampler: GE2EBatchSampler,
             device: torch.device) -> dict[str, float]:
    """Loss and EER on the fixed validation crops (eval mode: no SpecAugment, no margin annealing).

    The EER scores every pair of validation crops by cosine; unlike the loss it is comparable
    across losses and across epochs of a margin ramp-up.
    """
    step_module.eval()
    losses, embeddings, labels = [], [], []
    for waves, batch_labels in _loader(dataset, sampler, 0):
        waves, batch_labels = waves.to(device), batch_labels.to(device)
        emb = step_module.model(waves)
        losses.append(float(step_module.loss(emb, n_speakers=sampler.n_speakers, labels=batch_labels)))
        embeddings.append(nn.functional.normalize(emb, dim=-1).cpu())
        labels.append(batch_labels.cpu())
    step_module.train()
    emb, lab = torch.cat(embeddings), torch.cat(labels)
    upper = torch.triu_indices(len(lab), len(lab), offset=1)
    scores = (emb @ emb.T)[upper[0], upper[1]].numpy()
    same = (lab[upper[0]] == lab[upper[1]]).numpy()
    result = {"valid_loss": sum(losses) / len(losses)}
    if same.any() and not same.all():
        result["valid_eer"] = compute_eer(scores, same)[0]
    return result


def save_model(path: Path, model: nn.Module, config: dict[str, Any], record: dict[str, Any]) -> None:
    """The inference file: config + weights, no optimiser state."""
    atomic_save({"config": config, "state_dict": model.state_dict(), "trained": record}, path)
