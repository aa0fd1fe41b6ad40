"""The training loop: N x M speaker batches, SGD/Adam, gradient clipping, LR halving on plateau or
warm-up + cosine decay, early stopping, an atomic checkpoint every epoch and exact resume.
Runs unchanged under ``torchrun`` (DDP).

:func:`train` runs in four steps:

1. :func:`prepare_run` builds and checks everything (model, loss, optimiser, data folders, the header
   of every audio file, ``init_from``) and writes nothing, so a bad config or bad data leaves no
   run folder behind;
2. under the run folder's lock, :func:`open_run` checks that a resume continues the same run (the
   checkpoint's config against the new one), then restores it with :func:`restore`;
3. :func:`run_epoch` trains one epoch;
4. :func:`finish_epoch` validates, adapts the learning rate, decides on early stopping and writes
   ``checkpoint.pt``, then ``model.pt``, then ``history.json``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import voxprint.losses  # noqa: F401  (registers losses)
from voxprint.config import save_config
from voxprint.data import DataFolder, GE2EBatchSampler, read_data_folder
from voxprint.data.dataset import CropDataset, collate_crops
from voxprint.errors import ConfigError, ModelError
from voxprint.fileio import atomic_write_text, remove_orphaned_temps
from voxprint.metrics import compute_eer
from voxprint.models import EmbeddingModel, build_embedding_model
from voxprint.registry import LOSSES
from voxprint.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RunLock,
    load_torch_file,
    save_torch_file,
)
from voxprint.training.checkpoint import (
    check_resumable,
    read_checkpoint,
    repair_model_file,
    save_model_file,
    to_plain,
)
from voxprint.training.distributed import DistributedContext
from voxprint.audio import check_audio_files
from voxprint.inference import resolve_device

if TYPE_CHECKING:
    from voxprint.losses.orthogonal import OrthogonalRegularizer


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
    """What :func:`train` returns."""

    out_dir: Path
    epochs_run: int
    best_valid: float  # best value of the selection metric (optim.select_by)
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None  # final weights (the best-validation weights are in model.pt)
    unit: str = "epochs"  # what epochs_run counts ("EM steps" for the statistical models)
    metric: str | None = None  # what best_valid is, when not optim.select_by's best value


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"],
                                               weight_decay=cfg["weight_decay"]),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                                 amsgrad=cfg.get("amsgrad", False)),
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                                   amsgrad=cfg.get("amsgrad", False)),
}


def build_optimizer(cfg: dict[str, Any], model: nn.Module, loss_fn: nn.Module) -> torch.optim.Optimizer:
    """The ``optim`` section's optimiser over two groups: the model's parameters, and the loss's at
    ``loss_lr_scale`` times the learning rate (each group keeps its ``lr_scale`` for :func:`set_lr`).

    Raises:
        ConfigError: an unknown optimiser name.
    """
    if cfg["name"] not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg['name']!r}; known: {sorted(OPTIMIZERS)}")
    groups = [{"params": list(model.parameters()), "lr_scale": 1.0},
              {"params": list(loss_fn.parameters()), "lr_scale": cfg["loss_lr_scale"]}]
    optimizer = OPTIMIZERS[cfg["name"]]([g for g in groups if g["params"]], cfg)
    set_lr(optimizer, cfg["lr"])
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the base learning rate ``lr`` (each group gets ``lr`` times its ``lr_scale``)."""
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
    """The config's registered loss; classification losses also get the embedding size and class count."""
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
    """data.train split into training crops (augmented) and held-out validation crops (data.valid_fraction).

    Raises:
        DataError: the data folder is missing or malformed.
    """
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


@dataclass
class TrainingRun:
    """One training run: what :func:`prepare_run` builds, and the state the epochs advance.

    Attributes:
        config: the run's config.
        out_dir: the run folder.
        ctx: this process's place in a distributed run.
        device: where the model trains.
        model: the embedder (its weights go to ``model.pt``).
        loss_fn: the training loss (with its own parameters, e.g. GE2E's w and b).
        step_module: model + loss + SpecAugment, the module the optimiser and checkpoint cover.
        runner: ``step_module``, wrapped in DistributedDataParallel under torchrun.
        optimizer: the optimiser.
        sources: data.train, then each MultiReader source of data.sources.
        valid_set: the held-out utterances.
        valid_sampler: fixed validation batches; None without validation (valid_fraction 0).
        regularizer: orthogonal regulariser, or None.
        plateau: validation bookkeeping for LR halving and early stopping.
        history: one record per epoch (epoch 0: the untrained model).
        start_epoch: the first epoch still to run (counted from 0).
        lr: the current base learning rate.
        stopped: early stopping has ended the run.
    """

    config: dict[str, Any]
    out_dir: Path
    ctx: DistributedContext
    device: torch.device
    model: EmbeddingModel
    loss_fn: nn.Module
    step_module: TrainingStep
    runner: nn.Module
    optimizer: torch.optim.Optimizer
    sources: list[Source]
    valid_set: CropDataset
    valid_sampler: GE2EBatchSampler | None
    regularizer: OrthogonalRegularizer | None
    plateau: PlateauState = field(default_factory=PlateauState)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    lr: float = 0.0
    stopped: bool = False


def train(config: dict[str, Any], out_dir: str | Path, resume: bool = False, progress: bool = True,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
          device: str | torch.device | None = None) -> TrainResult:
    """Train the model described by ``config`` into ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (everything needed to resume, rewritten each epoch),
    ``model.pt`` (best-validation weights), ``config.yaml`` and ``history.json``. The folder is
    created only once the config and every audio file have been checked, and it stays locked
    while training runs.

    Args:
        config: a loaded config (:func:`voxprint.config.load_config`).
        out_dir: the run folder.
        resume: continue the run in ``out_dir`` from its checkpoint (a fresh run when it has none).
        progress: show a progress bar and one line per epoch (both on stderr, so stdout stays for results).
        on_epoch_end: called as ``on_epoch_end(epoch, record)`` after each epoch's files are written.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; by default each process's own GPU under
            ``torchrun``, CUDA when available, else the CPU.

    Returns:
        The run's history, best selection metric and final model.

    Raises:
        ConfigError: the config is unusable, ``out_dir`` holds a run and ``resume`` is false, or the
            resume's config changes what may not change.
        DataError: a data folder or some of its audio files are unusable.
        ModelError: ``init_from`` or the checkpoint cannot be read.
        voxprint.runs.lock.RunFolderBusy: another process is using ``out_dir``.
    """
    from voxprint.training.statistical import is_statistical, train_statistical

    if is_statistical(config):  # GMM-UBM and i-vector: EM, not gradients
        return train_statistical(config, out_dir, resume, progress, on_epoch_end, device)
    run = prepare_run(config, out_dir, resume, device)
    # Only the main process writes, so only it locks (the other ranks of a torchrun job would
    # otherwise find their own job holding the folder).
    with RunLock(run.out_dir, "train") if run.ctx.is_main else nullcontext():
        open_run(run, resume)
        for epoch in range(run.start_epoch, run.config["optim"]["epochs"]):
            if run.stopped:
                break
            started = time.time()
            train_loss = run_epoch(run, epoch, progress)
            record = finish_epoch(run, epoch, train_loss, started, progress)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    run.ctx.close()
    return TrainResult(out_dir=run.out_dir, epochs_run=sum(1 for r in run.history if r["epoch"] > 0),
                       best_valid=run.plateau.best, history=run.history, model=run.model)


def prepare_run(config: dict[str, Any], out_dir: str | Path, resume: bool = False,
                device: str | torch.device | None = None) -> TrainingRun:
    """Build and check everything a run needs, without writing anything.

    Args:
        config: a loaded config.
        out_dir: the run folder (only looked at).
        resume: whether the run will continue a checkpoint in ``out_dir`` (then ``init_from`` is
            not applied: the checkpoint's weights replace it).
        device: where to train (see :func:`train`).

    Returns:
        The run, with a fresh model (seeded by ``config["seed"]``) and an empty history.

    Raises:
        ConfigError: no training data; ``out_dir`` holds a run and ``resume`` is false; an unknown
            model, loss or optimiser; MultiReader with a classification loss; too little validation
            data; a regulariser naming a missing layer; ``init_from`` of a different model.
        DataError: a data folder is malformed.
        AudioError: some of its audio files cannot be decoded.
        ModelError: ``init_from``'s checkpoint cannot be read.
    """
    out_dir = Path(out_dir)
    data_cfg, optim_cfg = config["data"], config["optim"]
    if not data_cfg.get("train"):
        raise ConfigError("no training data: set data.train in the config or pass --data")
    _refuse_overwrite(out_dir, resume)
    ctx = DistributedContext.from_env()
    # Everything that draws from torch's generator is built in this order after seeding: a fresh run's
    # initial weights, and the random stream its epochs continue, depend on it.
    torch.manual_seed(config["seed"])
    device = ctx.device() if device is None else resolve_device(device)
    model = build_embedding_model(config)
    train_set, valid_set = build_datasets(config, model)
    loss_fn = build_loss(config, model.encoder.embedding_dim, train_set.num_classes)
    step_module = TrainingStep(model, loss_fn, build_spec_augment(config["specaugment"])).to(device)
    optimizer = build_optimizer(optim_cfg, model, loss_fn)
    sources = build_sources(config, train_set, model, ctx)
    valid_sampler = validation_sampler(config, valid_set)
    regularizer = build_regularizer(config["regularizer"], optim_cfg["epochs"])
    if regularizer is not None:
        regularizer.weights(step_module)  # a misnamed layer fails now, not at the first step
    remedy = "replace them, or remove them from wav.scp and utt2spk"
    check_audio_files({**train_set.folder.wav, **valid_set.folder.wav}, f"data.train {data_cfg['train']}",
                      max_seconds=None, remedy=remedy)
    for source in sources[1:]:
        check_audio_files(source.dataset.folder.wav, f"data.sources {source.dataset.folder.root}",
                          max_seconds=None, remedy=remedy)
    if config["init_from"] and not (resume and (out_dir / CHECKPOINT_FILE).exists()):
        initialise_from(step_module, Path(config["init_from"]) / CHECKPOINT_FILE)
    runner = nn.parallel.DistributedDataParallel(step_module) if ctx.enabled else step_module
    return TrainingRun(config=config, out_dir=out_dir, ctx=ctx, device=device, model=model, loss_fn=loss_fn,
                       step_module=step_module, runner=runner, optimizer=optimizer, sources=sources,
                       valid_set=valid_set, valid_sampler=valid_sampler, regularizer=regularizer,
                       lr=optim_cfg["lr"])


def open_run(run: TrainingRun, resume: bool) -> None:
    """Start the run in its folder, or resume it; call while holding the folder's lock.

    A resume's config is checked against the checkpoint's before anything is written. Then the
    temporary files of killed writes are removed and ``config.yaml`` is written; a fresh run records
    the untrained model's validation metrics as epoch 0, a resumed one restores its checkpoint and
    re-creates a ``model.pt`` that a kill left an epoch behind.

    Raises:
        ConfigError: ``out_dir`` holds a run and ``resume`` is false, or the resume changes the run.
        ModelError: the checkpoint cannot be read.
    """
    # Checked again under the lock: another process may have finished a run here since prepare_run.
    _refuse_overwrite(run.out_dir, resume)
    checkpoint_path = run.out_dir / CHECKPOINT_FILE
    state = None
    if resume and checkpoint_path.exists():
        state = read_checkpoint(checkpoint_path)
        check_resumable(state["config"], run.config, run.out_dir)
    if run.ctx.is_main:
        remove_orphaned_temps(run.out_dir)
        save_config(run.config, run.out_dir / CONFIG_FILE)
    if state is None:
        record_untrained(run)
        return
    restore(run, state)
    if run.ctx.is_main:
        repair_model_file(run.out_dir, state)
        _write_history(run)


def restore(run: TrainingRun, state: dict[str, Any]) -> None:
    """Put a checkpoint's state back into ``run``: weights, optimiser, plateau, history, learning rate
    and torch's random generator, so the next epoch is the one an uninterrupted run would train."""
    run.step_module.load_state_dict(state["step"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.plateau, run.history = PlateauState(**state["plateau"]), state["history"]
    run.start_epoch, run.lr = state["epoch"] + 1, run.history[-1]["lr"]
    # A run that stopped early continues when the resume raised optim.early_stop_patience.
    run.stopped = bool(run.history[-1]["stop"]) and (
        run.plateau.epochs_since_best >= run.config["optim"]["early_stop_patience"])
    torch.set_rng_state(state["torch_rng"])


def record_untrained(run: TrainingRun) -> None:
    """Epoch 0: the untrained model's validation metrics, the chance level training must beat."""
    if run.valid_sampler is None:
        return
    metrics = validation_metrics(run.step_module, run.valid_set, run.valid_sampler, run.device)
    run.history.append(to_plain({"epoch": 0, "train_loss": None, **metrics, "lr": run.lr, "best": False,
                                 "seconds": 0.0, "stop": False}))


def run_epoch(run: TrainingRun, epoch: int, progress: bool = False) -> float:
    """Train epoch ``epoch`` (counted from 0); returns its mean training loss (over all ranks)."""
    optim_cfg = run.config["optim"]
    for source in run.sources:
        source.sampler.set_epoch(epoch)
    if hasattr(run.loss_fn, "set_epoch"):
        run.loss_fn.set_epoch(epoch)
    run.step_module.train()
    total, count, steps = 0.0, 0, len(run.sources[0].sampler)
    loaders = [_loader(source.dataset, source.sampler, run.config["data"]["num_workers"]) for source in run.sources]
    bar = tqdm(zip(*loaders), total=steps, desc=f"epoch {epoch + 1}/{optim_cfg['epochs']}",
               disable=not (progress and run.ctx.is_main), leave=False)
    for batches in bar:
        if optim_cfg["schedule"] == "cosine":
            run.lr = scheduled_lr(optim_cfg, epoch + count / steps)
            set_lr(run.optimizer, run.lr)
        run.optimizer.zero_grad(set_to_none=True)
        penalty = run.regularizer(run.step_module, epoch) if run.regularizer is not None else None
        loss = train_step(run.runner, run.sources, batches, run.device, run.ctx.enabled, penalty)
        nn.utils.clip_grad_norm_(run.step_module.parameters(), optim_cfg["clip_grad_norm"])
        run.optimizer.step()
        total, count = total + loss, count + 1
        bar.set_postfix(loss=f"{total / count:.3f}")
    return run.ctx.mean(total / max(count, 1))


def finish_epoch(run: TrainingRun, epoch: int, train_loss: float, started: float,
                 progress: bool = False) -> dict[str, Any]:
    """Validate, adapt the learning rate, decide on early stopping, record the epoch and save the run.

    Args:
        run: the run.
        epoch: the epoch just trained (counted from 0).
        train_loss: its mean training loss.
        started: ``time.time()`` when the epoch began.
        progress: print a line for the epoch.

    Returns:
        The epoch's history record.
    """
    optim_cfg = run.config["optim"]
    if run.valid_sampler is not None:
        valid = validation_metrics(run.step_module, run.valid_set, run.valid_sampler, run.device)
        improved = run.plateau.update(valid[optim_cfg["select_by"]])
    else:  # no held-out data (valid_fraction 0): keep the last epoch, stop only at optim.epochs
        valid, improved = {}, True
    if optim_cfg["schedule"] == "plateau" and run.plateau.bad_epochs >= optim_cfg["lr_patience"]:
        run.lr = max(run.lr * optim_cfg["lr_factor"], optim_cfg["min_lr"])
        set_lr(run.optimizer, run.lr)
        run.plateau.bad_epochs = 0
    run.stopped = run.plateau.epochs_since_best >= optim_cfg["early_stop_patience"]
    record = {"epoch": epoch + 1, "train_loss": train_loss, **valid, "lr": run.lr,
              "best": improved, "seconds": round(time.time() - started, 2), "stop": run.stopped}
    if run.regularizer is not None:
        record["regularizer_lambda"] = run.regularizer.schedule.value_at(epoch)
    record = to_plain(record)
    run.history.append(record)
    if run.ctx.is_main:
        save_epoch(run, epoch, record)
        if progress:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in valid.items())
            print(f"epoch {epoch + 1}: train_loss {train_loss:.4f}  {shown}  lr {run.lr:.2e}"
                  f"{' *' if improved else ''} ({record['seconds']:.0f}s)", file=sys.stderr, flush=True)
    return record


def save_epoch(run: TrainingRun, epoch: int, record: dict[str, Any]) -> None:
    """Write the run's files after ``epoch``: ``checkpoint.pt``, then ``model.pt`` (when the epoch is
    the best), then ``history.json``.

    The checkpoint goes first so that a kill between two writes leaves ``model.pt`` behind the
    checkpoint, never ahead of it: :func:`voxprint.training.checkpoint.repair_model_file` catches it
    up on resume, whereas a ``model.pt`` ahead would hold weights the resumed run never reproduces.
    """
    save_torch_file({"step": run.step_module.state_dict(), "optimizer": run.optimizer.state_dict(),
                     "plateau": to_plain(vars(run.plateau)), "history": run.history, "epoch": epoch,
                     "torch_rng": torch.get_rng_state(), "config": to_plain(run.config)},
                    run.out_dir / CHECKPOINT_FILE)
    if record["best"]:
        save_model_file(run.out_dir / MODEL_FILE, run.model.state_dict(), run.config, record)
    _write_history(run)


def _write_history(run: TrainingRun) -> None:
    atomic_write_text(run.out_dir / HISTORY_FILE, json.dumps(run.history, indent=1))


def _refuse_overwrite(out_dir: Path, resume: bool) -> None:
    if (out_dir / CHECKPOINT_FILE).exists() and not resume:
        raise ConfigError(f"{out_dir} already holds a training run; pass --resume to continue it or pick another --out")


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


def build_regularizer(options: dict[str, Any], total_epochs: int) -> OrthogonalRegularizer | None:
    """The orthogonal regulariser of the config's ``regularizer`` section; None when it is empty."""
    if not options:
        return None
    from voxprint.losses.orthogonal import OrthogonalRegularizer

    return OrthogonalRegularizer.from_config(options, total_epochs)


def initialise_from(step_module: TrainingStep, checkpoint: Path) -> list[str]:
    """Copy every tensor of a previous run whose name and shape match; returns the names skipped.

    The embedder must match exactly (a fine-tuning run keeps the architecture); loss parameters
    are copied when compatible, so an AM-softmax stage starts from the warm-up's classifier.

    Raises:
        ConfigError: the folder holds no checkpoint, or its model differs from this config's.
        ModelError: the checkpoint is unreadable or holds no training state.
    """
    if not checkpoint.is_file():
        raise ConfigError(f"init_from {checkpoint.parent}: no {checkpoint.name} there; name the folder of a "
                          "run trained by `voxprint train`")
    state = load_torch_file(checkpoint)
    if not isinstance(state.get("step"), dict):
        raise ModelError(f"{checkpoint} holds no training state ('step'); init_from needs a checkpoint "
                         "written by `voxprint train`")
    source, target = state["step"], step_module.state_dict()
    skipped = [k for k in target if k not in source or source[k].shape != target[k].shape]
    if any(k.startswith("model.") for k in skipped):
        raise ConfigError(f"init_from {checkpoint.parent}: its model differs from this config's "
                          f"(first mismatch: {next(k for k in skipped if k.startswith('model.'))})")
    step_module.load_state_dict({k: v for k, v in source.items() if k in target and k not in skipped}, strict=False)
    return skipped


def build_spec_augment(options: dict[str, Any]) -> nn.Module | None:
    """SpecAugment with the config's ``specaugment`` options; None when they are empty."""
    if not options:
        return None
    from voxprint.features.specaugment import SpecAugment

    return SpecAugment(**options)


@torch.no_grad()
def validation_metrics(step_module: TrainingStep, dataset: CropDataset, sampler: GE2EBatchSampler,
                       device: torch.device) -> dict[str, float]:
    """Loss and EER on the fixed validation crops (eval mode: no SpecAugment, no margin annealing).

    The EER (:func:`pairwise_eer`) scores every pair of validation crops by cosine; unlike the loss
    it is comparable across losses and across epochs of a margin ramp-up.

    Returns:
        ``valid_loss``, and ``valid_eer`` when the crops hold both same- and different-speaker pairs.
    """
    step_module.eval()
    losses, embeddings, labels = [], [], []
    for waves, batch_labels in _loader(dataset, sampler, 0):
        waves, batch_labels = waves.to(device), batch_labels.to(device)
        emb = step_module.model(waves)
        losses.append(float(step_module.loss(emb, n_speakers=sampler.n_speakers, labels=batch_labels)))
        embeddings.append(emb.cpu())
        labels.append(batch_labels.cpu())
    step_module.train()
    result = {"valid_loss": sum(losses) / len(losses)}
    eer = pairwise_eer(torch.cat(embeddings), torch.cat(labels))
    if eer is not None:
        result["valid_eer"] = eer
    return result


def pairwise_eer(embeddings: torch.Tensor, labels: torch.Tensor) -> float | None:
    """EER of the cosine scores of every pair of distinct rows.

    A row is never paired with itself: that pair would be a target trial scoring exactly 1 and
    flatter every model.

    Args:
        embeddings: ``(n, dim)``, any norm.
        labels: ``(n,)`` speaker labels.

    Returns:
        The EER, or None when the pairs are all same-speaker or all different-speaker.

    Example:
        >>> e = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> pairwise_eer(e, torch.tensor([0, 0, 1, 1]))  # targets score -1, non-targets 0
        1.0
    """
    emb = nn.functional.normalize(embeddings, dim=-1)
    upper = torch.triu_indices(len(labels), len(labels), offset=1)
    scores = (emb @ emb.T)[upper[0], upper[1]].numpy()
    same = (labels[upper[0]] == labels[upper[1]]).numpy()
    if not same.any() or same.all():
        return None
    return float(compute_eer(scores, same)[0])
