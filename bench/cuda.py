#!/usr/bin/env python3
"""CUDA: the bundled models on a GPU against the CPU of the same machine, and a training run on the GPU.

    python bench/cuda.py [--device cuda] [--train-epochs 3]

Needs a CUDA device (it says so and exits otherwise); CI never runs it. In one run:

1. every bundled model (``default``, ``ivector``, ``fused``) embeds the full speechocean762 dev set
   (480 recordings, 114,960 trials) on the CPU (one torch thread, as every CPU benchmark here) and on
   the GPU: the cosine of each recording's GPU embedding to its CPU embedding (min / mean), the EER and
   the false-accept rate at the stored threshold with the model's back-end on each, and x real time
   (decoding included: the recordings are read from disk by both);
2. diarization of the real ``pyannote-sample`` conversation with the bundled model on each: DER
   (collar 0.25 s, overlap scored), speakers found, x real time;
3. a training run of the bundled model's recipe (``voxprint/pretrained/default/config.yaml``) on the
   GPU, on the dev folder so that the run needs no other data (a check of the GPU path, not a model to
   keep): ``--train-epochs`` epochs, interrupted after the first and resumed from its checkpoint;
   seconds per epoch, the training loss of each epoch, and whether the GPU-trained run loads and
   embeds on the CPU (a checkpoint written on a GPU must not need one to be read);
4. bulk extraction, ``voxprint embed --data`` as a user runs it (a fresh process: start, model loading,
   decoding and embedding): the dev set four times over (1,920 recordings, 2 h), on the CPU (one thread;
   all the machine's cores) and on the GPU: one process with 0 or 8 decode worker processes, and four
   ranks sharing the GPU (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as torchrun sets them).

Writes docs/benchmarks.md, section "CUDA".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import dev_evaluation  # bench/common.py: `python bench/cuda.py` puts bench/ on the path

SECTION = "CUDA"
MODELS = ("default", "ivector", "fused")


def diarization_run(model: Any, sample: Path) -> dict[str, Any]:
    """DER (collar 0.25 s, overlap scored), speakers found and seconds on the pyannote sample."""
    from voxprint.diarization.scoring import score_diarization
    from voxprint.diarization.segments import read_rttm

    reference = read_rttm(sample / "sample.rttm")["sample"]
    model.diarize(sample / "sample.wav")  # the first call loads the VAD and warms the device
    start = time.perf_counter()
    result = model.diarize(sample / "sample.wav")
    seconds = time.perf_counter() - start
    score = score_diarization({"sample": reference}, {"sample": result.segments}, collar=0.25)
    return {"der": score.der, "speakers": len(result.speakers), "seconds": seconds}


def training_run(device: str, dev: Path, epochs: int, out: Path) -> dict[str, Any]:
    """Train the bundled recipe on ``dev`` for ``epochs`` epochs on ``device``, stopping after the first
    and resuming; then load the run on the CPU and embed one recording."""
    import voxprint
    from voxprint.audio import load_audio
    from voxprint.config import load_config
    from voxprint.training.trainer import train

    config = load_config(Path(voxprint.__file__).parent / "pretrained" / "default" / "config.yaml")
    config["data"]["train"] = str(dev)
    config["optim"]["epochs"] = epochs
    # Reverberation's impulse responses are simulated (pyroomacoustics) when no bank is cached; the
    # check is of the GPU path, so it goes without them.
    config["augment"]["reverb_prob"] = 0.0

    class Interrupted(Exception):
        """Stands for a run killed after its first epoch."""

    def stop_after_first(epoch: int, record: dict[str, Any]) -> None:
        raise Interrupted

    try:
        train(config, out, progress=False, device=device, on_epoch_end=stop_after_first)
    except Interrupted:
        pass
    first = max(r["epoch"] for r in json.loads((out / "history.json").read_text()))  # epochs before the stop
    resumed = train(config, out, resume=True, progress=False, device=device)
    history = [r for r in resumed.history if r["epoch"] > 0]
    on_cpu = voxprint.load_model(out, device="cpu")
    wave = load_audio(next(iter(sorted(dev.glob("*/*.flac")))))
    embedding = on_cpu.extract_embedding(wave, sample_rate=on_cpu.sample_rate)
    return {"first_epochs": first, "epochs": len(history),
            "losses": [float(r["train_loss"]) for r in history],
            "seconds": [float(r["seconds"]) for r in history],
            "cpu_embedding_ok": bool(np.isfinite(embedding).all() and abs(np.linalg.norm(embedding) - 1) < 1e-4)}


def bulk_extraction(dev: Path, device: str, threads: int, decode_workers: int, work: Path, ranks: int = 1,
                    copies: int = 4) -> float:
    """Wall seconds of ``voxprint embed --data`` over ``copies`` copies of the dev set, in ``ranks`` processes
    started as ``torchrun --nproc_per_node=ranks`` starts them (rank 0 merges)."""
    from voxprint.data import read_data_folder

    folder = read_data_folder(dev)
    data = work / "bulk"
    if not data.is_dir():
        data.mkdir(parents=True)
        (data / "wav.scp").write_text("".join(f"copy{c}-{u} {folder.wav[u]}\n" for c in range(copies)
                                              for u in folder.utterances))
    command = [sys.executable, "-m", "voxprint", "embed", "--data", str(data), "--out", str(work / "bulk.npz"),
               "--quiet", "--device", device, "--threads", str(threads), "--decode-workers", str(decode_workers)]
    torchrun = {"WORLD_SIZE": str(ranks)} if ranks > 1 else {}
    start = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads), **torchrun,
                                       **({"RANK": str(rank), "LOCAL_RANK": str(rank)} if torchrun else {})})
                 for rank in range(ranks)]
    if any(p.wait() != 0 for p in processes):
        raise SystemExit("an extraction process failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the GPU to measure (default: cuda)")
    parser.add_argument("--train-epochs", type=int, default=3, help="epochs of the training check (>= 2)")
    parser.add_argument("--skip-models", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="print the tables, do not write docs/benchmarks.md")
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():  # --device cpu: a check of this script
        raise SystemExit("bench/cuda.py needs a CUDA device; this machine has none")
    if args.train_epochs < 2:
        raise SystemExit("--train-epochs must be at least 2 (the run is stopped after one and resumed)")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    warnings.simplefilter("ignore")

    import voxprint
    from voxprint.data.trials import read_trials
    from voxprint.paths import data_root
    from voxprint.report import format_table, publish_benchmark

    dev = data_root() / "speechocean762" / "dev"
    sample = data_root() / "pyannote-sample"
    trials = read_trials(dev / "trials.txt")
    dev_seconds = sum(float(line.split("\t")[3]) for line in (dev / "utterances.tsv").read_text().splitlines()[1:])
    first_file = next(iter(sorted(dev.glob("*/*.flac"))))
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if args.device != "cpu" else "none (--device cpu)"

    rows = []
    for name in MODELS if not args.skip_models else ():
        results = {}
        for side, device in (("cpu", "cpu"), ("gpu", args.device)):
            model = voxprint.load_model(name, device=device)
            model.extract_embedding(first_file)  # CUDA start-up, kernels' warm-up
            results[side] = dev_evaluation(model, dev, trials, results["cpu"]["embeddings"] if results else None)
        cpu, gpu_run = results["cpu"], results["gpu"]
        rows.append([name, f"{gpu_run['cos_min']:.6f} / {gpu_run['cos_mean']:.6f}",
                     f"{100 * cpu['eer']:.3f}", f"{100 * gpu_run['eer']:.3f}",
                     f"{100 * cpu['far']:.3f}", f"{100 * gpu_run['far']:.3f}",
                     f"{dev_seconds / cpu['seconds']:.0f}x", f"{dev_seconds / gpu_run['seconds']:.0f}x"])
        print(rows[-1], flush=True)
    table = format_table(["model", "cosine GPU to CPU (min / mean)", "EER % (CPU)", "EER % (GPU)",
                          "FAR at threshold % (CPU)", "FAR at threshold % (GPU)", "x real time (CPU, 1 thread)",
                          "x real time (GPU)"], rows)

    diar_rows = []
    for device in dict.fromkeys(("cpu", args.device)):
        result = diarization_run(voxprint.load_model("default", device=device), sample)
        diar_rows.append([device, f"{100 * result['der']:.1f}", str(result["speakers"]),
                          f"{30.0 / result['seconds']:.0f}x"])
        print(diar_rows[-1], flush=True)
    diar_table = format_table(["device", "DER % (collar 0.25, overlap scored)", "speakers found", "x real time"],
                              diar_rows)

    with tempfile.TemporaryDirectory() as tmp:
        training = training_run(args.device, dev, args.train_epochs, Path(tmp) / "run")
        cores = len(os.sched_getaffinity(0))
        bulk_rows = []
        for device, ranks, threads, workers in (("cpu", 1, 1, 0), ("cpu", 1, cores, 0), (args.device, 1, 1, 0),
                                                (args.device, 1, 1, 8), (args.device, 4, 1, 2)):
            wall = bulk_extraction(dev, device, threads, workers, Path(tmp), ranks)
            bulk_rows.append([device, str(ranks), str(threads), str(workers), f"{wall:.1f}", f"{4 * 480 / wall:.0f}",
                              f"{4 * dev_seconds / wall:.0f}x"])
            print(bulk_rows[-1], flush=True)
    bulk_table = format_table(["device", "processes (ranks)", "torch threads per rank", "decode workers per rank", "wall time (s)", "recordings/s",
                               "x real time"], bulk_rows)
    print(training, flush=True)
    train_table = format_table(
        ["epoch", "training loss", "seconds"],
        [[str(i + 1), f"{loss:.3f}", f"{sec:.1f}"] for i, (loss, sec) in enumerate(zip(training["losses"],
                                                                                      training["seconds"]))])
    notes = [
        f"GPU: {gpu} (torch {torch.__version__}, CUDA {torch.version.cuda}). The CPU rows ran on the same "
        "machine's CPU, one torch thread. CI never runs this script; it needs a GPU.",
        "",
        "**Bundled models, full dev set** (480 recordings, 114,960 trials, each model's own back-end and "
        "stored threshold; x real time includes reading and decoding the files):",
        "",
        table,
        "**Diarization of the real pyannote sample** (30 s, 2 speakers; bundled model, count estimated):",
        "",
        diar_table,
        f"**Training on the GPU** (the bundled recipe on the dev folder, a check of the GPU path, not a "
        f"model to keep): the run was stopped after epoch {training['first_epochs']} and resumed from its "
        f"checkpoint to epoch {training['epochs']}; the GPU-trained run "
        f"{'loads and embeds on the CPU' if training['cpu_embedding_ok'] else 'FAILED to load or embed on the CPU'}.",
        "",
        train_table,
        "**Bulk extraction** (`voxprint embed --data`, a fresh process each: start, model loading, decoding and "
        "embedding of the dev set four times over, 1,920 recordings, 2 h of audio; on the GPU recordings of "
        "different lengths share zero-padded encoder calls, `voxprint.inference.windows`). Ranks share the GPU "
        "(`torchrun --nproc_per_node=N -m voxprint embed --data ... --device cuda`; on a machine with several GPUs "
        "each rank takes its own):",
    ]
    if args.dry_run:
        print("\n".join(notes))
        print(bulk_table)
        return
    publish_benchmark(SECTION, "python bench/cuda.py", "One torch thread for the CPU rows unless a table says otherwise.",
                      notes, bulk_table)


if __name__ == "__main__":
    main()
