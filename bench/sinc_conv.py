#!/usr/bin/env python3
"""Sinc-conv on CPU: direct convolution vs FFT filtering, alone and inside a RawNet2 training step.

    .venv/bin/python bench/sinc_conv.py [--config recipes/rawnet2/systems/fms_mul_add.yaml] [--repeats 3]

On one thread, times forward + backward of the sinc-conv layer for 125, 251 and 375 taps with
``method="direct"`` and ``method="fft"``, and of the whole RawNet2 of the config (its first layer's taps,
batch and crop length), best of ``--repeats``. Writes docs/benchmarks.md, section "Sinc-conv filtering
on CPU". The two methods agree to float rounding (tests/test_rawnet2.py), so the ratio is pure speed.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from voxprint.config import load_config
from voxprint.models import build_embedding_model
from voxprint.models.sinc_conv import SincConv
from voxprint.report import format_table, machine_description, write_markdown_section

REPO = Path(__file__).resolve().parent.parent

SECTION = "Sinc-conv filtering on CPU"


def best_seconds(step: Callable[[], torch.Tensor], repeats: int) -> float:
    """Fastest of ``repeats`` forward + backward passes (after one warm-up)."""
    step().sum().backward()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        step().sum().backward()
        timings.append(time.perf_counter() - start)
    return min(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="recipes/rawnet2/systems/fms_mul_add.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doc", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = load_config(REPO / args.config)
    data, model_cfg = config["data"], config["model"]
    batch = data["speakers_per_batch"] * data["utterances_per_speaker"]
    samples = data["crop_frames"][1]
    waves = torch.randn(batch, 1, samples)

    rows = []
    for taps in (125, 251, 375):
        times = {}
        for method in ("direct", "fft"):
            layer = SincConv(model_cfg["first_channels"], taps, padding=taps // 2, method=method)
            times[method] = best_seconds(lambda layer=layer: layer(waves), args.repeats)
        rows.append([f"sinc-conv layer, {taps} taps", f"{times['direct']:.3f}", f"{times['fft']:.3f}",
                     f"{times['direct'] / times['fft']:.1f}x"])
    models = {}
    for method in ("direct", "fft"):
        model = build_embedding_model(config)
        model.encoder.first.method = method
        models[method] = best_seconds(lambda m=model: m(waves.squeeze(1)), args.repeats)
    rows.append([f"RawNet2 of the config ({model_cfg['first_kernel']} taps)", f"{models['direct']:.3f}",
                 f"{models['fft']:.3f}", f"{models['direct'] / models['fft']:.1f}x"])
    table = format_table(["forward + backward, 1 thread", "direct (s)", "FFT (s)", "speed-up"], rows)
    command = " ".join([".venv/bin/python bench/sinc_conv.py", *(argv if argv is not None else sys.argv[1:])])
    body = "\n".join([f"Command: `{command}`.", f"Machine: {machine_description()}.", "",
                      f"Batch of {batch} crops of {samples} samples, {model_cfg['first_channels']} filters "
                      f"(config `{args.config}`).", "", table])
    print(table)
    print(f"wrote {write_markdown_section(args.doc, SECTION, body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
