#!/usr/bin/env python3
"""Is training input-bound? Data-pipeline throughput (decode + crop + augment) vs training-step throughput.

    .venv/bin/python bench/augmentation.py [--config configs/ecapa_tdnn_c192.yaml]

Measures, on one thread each: crops/s the CropDataset delivers with the config's augmentation (audio
already cached in memory, as after the first epoch; RIR bank cached), crops/s with augmentation off, and
crops/s one optimiser step of the config's model consumes. Writes docs/benchmarks.md, section
"Training data pipeline".
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from voxprint.config import load_config
from voxprint.data import GE2EBatchSampler
from voxprint.data.dataset import collate_crops
from voxprint.models import build_embedding_model
from voxprint.report import format_table, machine_description, write_markdown_section
from voxprint.training.trainer import TrainingStep, build_datasets, build_loss, build_optimizer, build_spec_augment

REPO = Path(__file__).resolve().parent.parent

SECTION = "Training data pipeline"


def crops_per_second(dataset, requests) -> float:
    start = time.perf_counter()
    for request in requests:
        dataset[request]
    return len(requests) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/ecapa_tdnn_c192.yaml")
    parser.add_argument("--doc", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(REPO / args.config)
    model = build_embedding_model(config)
    train_set, _ = build_datasets(config, model)
    data = config["data"]
    sampler = GE2EBatchSampler(train_set.speaker_utterances(), data["speakers_per_batch"],
                               data["utterances_per_speaker"], data["crop_frames"], batches_per_epoch=4)
    requests = [r for batch in sampler for r in batch]
    for index in range(len(train_set)):  # fill the audio cache, as the first epoch does
        train_set.waveform(index)
    augmented = crops_per_second(train_set, requests)
    plain_set, _ = build_datasets({**config, "augment": {}}, model)
    plain_set._cache = train_set._cache
    plain = crops_per_second(plain_set, requests)

    loss_fn = build_loss(config, model.encoder.embedding_dim, train_set.num_classes)
    step = TrainingStep(model, loss_fn, build_spec_augment(config["specaugment"]))
    optimizer = build_optimizer(config["optim"], model, loss_fn)
    waves, labels = collate_crops([train_set[r] for r in requests[: data["speakers_per_batch"] * data["utterances_per_speaker"]]])
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        loss = step(waves, labels, data["speakers_per_batch"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    consumed = len(waves) / min(timings[1:])

    crop_seconds = model.frontend.num_samples(data["crop_frames"][1]) / config["sample_rate"]
    rows = [["data pipeline, augmentation on", f"{augmented:.0f}"],
            ["data pipeline, augmentation off", f"{plain:.0f}"],
            [f"training step ({config['model']['name']}, batch {len(waves)})", f"{consumed:.1f}"]]
    table = format_table(["stage (1 thread)", f"{crop_seconds:.1f} s crops per second"], rows)
    verdict = ("not input-bound: one core of augmentation feeds "
               f"{augmented / consumed:.0f}x what one core of training consumes")
    if augmented < consumed:
        verdict = "INPUT-BOUND: augmentation is slower than training; use data.num_workers"
    body = "\n".join([f"Command: `.venv/bin/python bench/augmentation.py --config {args.config}`.",
                      f"Machine: {machine_description()}.", "",
                      f"Augmentation options: `{config['augment']}`; SpecAugment: `{config['specaugment']}`.", "",
                      table, "", f"Result: {verdict}."])
    print(table)
    print(verdict)
    print(f"wrote {write_markdown_section(args.doc, SECTION, body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
