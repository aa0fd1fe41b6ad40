#!/usr/bin/env python3
"""Deployment: inference speed of the bundled model in PyTorch and exported to ONNX (float32, int8).

    .venv/bin/python bench/export.py [--utterances 96] [--repeats 3] [--stream-seconds 20]

One run, one thread everywhere (torch and onnxruntime):

1. exports the bundled model to ONNX float32 and int8 (``voxprint.export.export_model``) in a
   temporary folder;
2. measures the machine's peak with large GEMMs (2048 x 2048 x 2048): float32 in torch (oneDNN/MKL)
   and in onnxruntime (MLAS), uint8 x int8 -> int32 in onnxruntime (``MatMulInteger``);
3. embeds dev recordings (decoded beforehand; features, windows and encoder timed) with PyTorch
   eager, PyTorch traced (``SpeakerModel.optimize``), onnxruntime float32 and int8 (through
   ``load_model``: torch front-end and windows), and both exports again on the torch-free path the CLI
   takes (``StandaloneEmbedder``: numpy filterbanks), timed as the CLI runs it, in a fresh process that
   never imports torch (``TORCH_FREE_TIMER``): x real time, and GFLOP/s from the operations
   torch's FlopCounterMode counts on the same work (matrix products and convolutions: encoder and mel
   filterbank; the FFT is not counted), as a fraction of the peak of the matching precision, and the
   ceiling that peak sets (the speed if every counted operation ran at it). Best of ``--repeats`` (the
   least disturbed by other jobs);
4. time from process start to the first embedding, each in a fresh process (median of 3): the
   ``voxprint similarity`` command (two recordings), ``voxprint.load_model(...).extract_embedding``, and
   the torch-free ``StandaloneEmbedder``;
5. streaming: latency per 100 ms chunk of :class:`~voxprint.inference.streaming.StreamingEmbedder`
   (recent 3 s and whole-stream embeddings updated on every chunk) over a stream of dev speech;
6. the full dev set (480 recordings, 114,960 trials) with the model's back-end: EER, minDCF and the
   false-accept rate at the stored threshold, for PyTorch and both exports.

Writes docs/benchmarks.md, section "Deployment: inference speed".
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import best_time, dev_evaluation  # bench/common.py: `python bench/export.py` puts bench/ on the path

SECTION = "Deployment: inference speed"
REPO = Path(__file__).resolve().parent.parent


class GemmPeaks:
    """GFLOP/s (GOP/s for int8) of one large matrix product: float32 in torch and onnxruntime, bfloat16 in torch,
    u8 x s8 in onnxruntime.

    Measured again right before each system is timed, so on a shared machine each fraction of peak
    compares two measurements taken under the same load.
    """

    def __init__(self, size: int = 2048):
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        from voxprint.export.standalone import onnxruntime_session

        self.flops = 2.0 * size ** 3
        self.scratch = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        self.torch_inputs = (torch.randn(size, size), torch.randn(size, size))
        self.bfloat16_inputs = tuple(x.to(torch.bfloat16) for x in self.torch_inputs)
        self.sessions = {}
        for name, op, a_type, b_array, out_type in (
                ("onnxruntime float32", "MatMul", TensorProto.FLOAT, rng.standard_normal((size, size), np.float32),
                 TensorProto.FLOAT),
                ("onnxruntime int8", "MatMulInteger", TensorProto.UINT8,
                 rng.integers(-128, 127, (size, size), dtype=np.int8), TensorProto.INT32)):
            graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "gemm",
                                      [helper.make_tensor_value_info("a", a_type, [size, size])],
                                      [helper.make_tensor_value_info("c", out_type, [size, size])],
                                      [numpy_helper.from_array(b_array, "b")])
            path = Path(self.scratch.name) / f"{op}.onnx"
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
            x = (rng.standard_normal((size, size), np.float32) if a_type == TensorProto.FLOAT
                 else rng.integers(0, 255, (size, size), dtype=np.uint8))
            self.sessions[name] = (onnxruntime_session(path, 1), x)
        self.best: dict[str, float] = {}

    def measure(self, name: str, repeats: int = 3) -> float:
        """The peak of ``name`` now (and the best seen so far in :attr:`best`)."""
        if name.startswith("torch"):
            a, b = self.torch_inputs if name == "torch float32" else self.bfloat16_inputs
            seconds = best_time(lambda: torch.mm(a, b), repeats)
        else:
            session, x = self.sessions[name]
            seconds = best_time(lambda: session.run(None, {"a": x}), repeats)
        rate = self.flops / seconds / 1e9
        self.best[name] = max(rate, self.best.get(name, 0.0))
        return rate

    def fp32(self) -> float:
        """The float32 peak now: the faster of torch's and onnxruntime's GEMM."""
        return max(self.measure("torch float32"), self.measure("onnxruntime float32"))


def bfloat16_model() -> Any:
    """The bundled model with its encoder traced and frozen in bfloat16 (oneDNN's AVX-512 BF16 kernels where the
    CPU has them; the filterbank stays float32): the issue's "bf16 if it helps" row."""
    import copy

    import voxprint
    from voxprint.inference.speaker_model import EncodeModule

    model = voxprint.load_model("default")
    encoder = copy.deepcopy(model.model).to(torch.bfloat16).eval()
    frontend = model.model.frontend
    example = torch.randn(1, 300, frontend.dim if hasattr(frontend, "dim") else frontend.n_mels, dtype=torch.bfloat16)
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(EncodeModule(encoder).eval(), example))
    model._encode = lambda feats: traced(feats.to(torch.bfloat16)).float()
    model._optimized = True  # bulk embedding's optimize() must not swap a float32 trace back in
    return model


def counted_flops(model: Any, waves: list[np.ndarray]) -> float:
    """Operations torch counts while the eager model embeds ``waves`` (features and encoder)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.windows.embed_many(waves)
    return float(counter.get_total_flops())


#: How the profiler's operator types are grouped in the time breakdown (any other type: "other float work").
OPERATOR_GROUPS = {
    "convolutions and matrix products": ("Conv", "FusedConv", "QLinearConv", "NhwcQLinearConv", "ConvInteger",
                                         "MatMul", "Gemm", "FusedMatMul", "QLinearMatMul", "MatMulInteger",
                                         "DynamicQuantizeMatMul", "QGemm", "MatMulIntegerToFloat"),
    "quantize / dequantize": ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"),
    "layout (transpose, split, concat, reshape)": ("Transpose", "Split", "Concat", "Reshape", "Slice", "Squeeze",
                                                   "Unsqueeze", "Expand", "Shape", "Gather"),
}


def convolution_flops(args: dict[str, Any]) -> float:
    """Operations of one float convolution from its profiler event's shapes: 2 x output size x (input
    channels per group x kernel size), the weight being (out channels, in channels per group, kernel...).

    Example:
        >>> convolution_flops({"input_type_shape": [{"float": [1, 80, 300]}, {"float": [192, 80, 5]}],
        ...                    "output_type_shape": [{"float": [1, 192, 300]}]})
        46080000.0
    """
    weight = next(iter(args["input_type_shape"][1].values()))
    output = next(iter(args["output_type_shape"][0].values()))
    return 2.0 * float(np.prod(output)) * float(np.prod(weight[1:]))


def operator_shares(folder: Path, waves: list[np.ndarray]) -> tuple[dict[str, float], float | None]:
    """Share of the exported graph's node time by operator group, from onnxruntime's profiler (one thread),
    over the workload's windows (numpy filterbanks as the torch-free path computes them); and the GFLOP/s of
    its float convolutions (``Conv``/``FusedConv`` node time only; None in a graph without them)."""
    import json

    import onnxruntime

    from voxprint.export.standalone import StandaloneEmbedder

    embedder = StandaloneEmbedder(folder, threads=1)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="voxprint-profile-")) / "ort")
    session = onnxruntime.InferenceSession(str(embedder.folder / embedder.record["file"]), options,
                                           providers=["CPUExecutionProvider"])
    for wave in waves:
        frames = embedder.features(wave)
        frames = frames - frames.mean(axis=0) if embedder.normalize == "segment" else frames
        session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(frames[None])})
    group_of = {op: group for group, ops in OPERATOR_GROUPS.items() for op in ops}
    totals: dict[str, float] = {}
    convolution = [0.0, 0.0]  # operations, microseconds
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event["args"]["op_name"]
            group = group_of.get(op, "other float work (statistics, softmax, norms, ...)")
            totals[group] = totals.get(group, 0.0) + float(event["dur"])
            if op in ("Conv", "FusedConv"):
                convolution[0] += convolution_flops(event["args"])
                convolution[1] += float(event["dur"])
    whole = sum(totals.values())
    rate = convolution[0] / convolution[1] / 1e3 if convolution[1] else None
    return {group: value / whole for group, value in totals.items()}, rate


#: Run by :func:`torch_free_seconds` in a fresh process: times a StandaloneEmbedder as the CLI runs it, in a
#: process that never imports torch (whose allocator state differs from one that has: see KaldiFbank.BLOCK_FRAMES).
TORCH_FREE_TIMER = """
import json, sys
import numpy as np
from voxprint.export.standalone import StandaloneEmbedder
folder, waves_file, repeats, bench = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, bench)
from common import best_time
with np.load(waves_file) as stored:
    waves = [stored[f"wave_{i}"] for i in range(len(stored.files))]
windows = StandaloneEmbedder(folder, threads=1).windows
embed = best_time(lambda: windows.embed_many(waves), repeats)
features = best_time(lambda: [windows.features(w) for w in waves], repeats)
print(json.dumps({"embed": embed, "features": features, "torch_imported": "torch" in sys.modules}))
"""


def torch_free_seconds(folder: Path, waves_file: Path, repeats: int) -> dict[str, float]:
    """Best times of the torch-free embedder over the stored waves, measured in a fresh process without torch:
    ``embed`` (windows and encoder, front-end included) and ``features`` (the front-end alone)."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1", "VOXPRINT_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", TORCH_FREE_TIMER, str(folder), str(waves_file), str(repeats),
                           str(Path(__file__).resolve().parent)],
                          check=True, capture_output=True, text=True, env=env, cwd=REPO)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result.pop("torch_imported"):
        raise RuntimeError("the torch-free timing process imported torch")
    return result


def child_seconds(code: list[str], repeats: int = 3) -> float:
    """Median wall time of a fresh process running ``code`` (argv), from spawn to exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VOXPRINT_THREADS": "1"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(code, check=True, capture_output=True, env=env, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def streaming_latency(model: Any, stream: np.ndarray, chunk: int) -> dict[str, float]:
    """Per-chunk latency of a StreamingEmbedder over ``stream``, and its final embedding vs offline."""
    from voxprint.inference.streaming import StreamingEmbedder

    embedder = StreamingEmbedder(model, recent_seconds=3.0)
    latencies = [embedder.push(stream[i:i + chunk]).latency for i in range(0, len(stream), chunk)]
    final = embedder.finish()
    offline = model.extract_embedding(stream, sample_rate=model.sample_rate)
    return {"mean": float(np.mean(latencies)), "p95": float(np.percentile(latencies, 95)),
            "max": float(np.max(latencies)), "cosine": float(final @ offline)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=96, help="dev recordings in the speed workload")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per system (the best counts)")
    parser.add_argument("--stream-seconds", type=float, default=20.0, help="length of the streaming test")
    parser.add_argument("--dry-run", action="store_true", help="print the tables, do not write docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    warnings.simplefilter("ignore")  # tracer and deprecation chatter

    import voxprint
    from voxprint.audio import load_audio
    from voxprint.data import read_data_folder
    from voxprint.data.trials import read_trials
    from voxprint.export import export_model, load_exported
    from voxprint.export.standalone import KaldiFbank
    from voxprint.paths import data_root
    from voxprint.report import format_table, publish_benchmark

    load_before = os.getloadavg()
    dev = data_root() / "speechocean762" / "dev"
    folder = read_data_folder(dev)
    picks = np.linspace(0, len(folder.utterances) - 1, args.utterances).round().astype(int)
    waves = [load_audio(folder.wav[folder.utterances[i]]) for i in picks]
    audio_seconds = sum(len(w) for w in waves) / 16000

    workdir = tempfile.TemporaryDirectory(prefix="voxprint-bench-export-")  # removed when the run ends
    scratch = Path(workdir.name)
    start = time.perf_counter()
    export_model("default", scratch / "float32")
    export_seconds = time.perf_counter() - start
    start = time.perf_counter()
    export_model("default", scratch / "int8", quantize="int8")
    int8_seconds = time.perf_counter() - start

    peaks = GemmPeaks()
    systems = {"PyTorch eager": voxprint.load_model("default"),
               "PyTorch traced (optimize)": voxprint.load_model("default").optimize(),
               "PyTorch traced bfloat16": bfloat16_model(),
               "onnxruntime float32": load_exported(scratch / "float32"),
               "onnxruntime int8": load_exported(scratch / "int8")}
    torch_free = {"onnxruntime float32, torch-free (CLI)": scratch / "float32",
                  "onnxruntime int8, torch-free (CLI)": scratch / "int8"}
    waves_file = scratch / "waves.npz"
    np.savez(waves_file, **{f"wave_{i}": wave for i, wave in enumerate(waves)})
    flops = counted_flops(systems["PyTorch eager"], waves)
    speed_rows, row_seconds, front_end_seconds = [], {}, {}
    for name, model in {**systems, **torch_free}.items():
        peak = (peaks.measure("onnxruntime int8") if "int8" in name else
                peaks.measure("torch bfloat16") if "bfloat16" in name else peaks.fp32())
        if name in torch_free:
            timed = torch_free_seconds(model, waves_file, args.repeats)
            seconds = row_seconds[name] = timed["embed"]
            front_end_seconds[name] = timed["features"]
        else:
            seconds = row_seconds[name] = best_time(lambda: model.windows.embed_many(waves), args.repeats)
        rate = flops / seconds / 1e9
        ceiling = peak / (flops / audio_seconds / 1e9)
        speed_rows.append([name, f"{audio_seconds / seconds:.0f}x", f"{rate:.1f}", f"{peak:.0f}",
                           f"{100 * rate / peak:.0f} %", f"{ceiling:.0f}x"])
        print(speed_rows[-1], flush=True)

    # Where the time goes: the front-end's share of the int8 rows, and the graphs' node time by operator group.
    front_end = []
    front_end_seconds["onnxruntime int8"] = best_time(
        lambda: [systems["onnxruntime int8"].windows.features(w) for w in waves], args.repeats)
    for name in ("onnxruntime int8", "onnxruntime int8, torch-free (CLI)"):
        seconds = front_end_seconds[name]
        front_end.append([f"front-end of the \"{name}\" row", f"{100 * seconds / row_seconds[name]:.0f} %"])
    profiled = {precision: operator_shares(scratch / precision, waves) for precision in ("float32", "int8")}
    shares = {precision: share for precision, (share, _) in profiled.items()}
    convolution_rate = profiled["float32"][1]
    groups = sorted({g for share in shares.values() for g in share}, key=lambda g: -shares["int8"].get(g, 0.0))
    breakdown_rows = [[group, *(f"{100 * shares[p].get(group, 0.0):.0f} %" for p in ("float32", "int8"))]
                      for group in groups]
    print(front_end, breakdown_rows, flush=True)

    a, b = (str(dev / "SPEAKER5017" / f"05017010{i}.flac") for i in (1, 2))
    first_seconds = len(load_audio(a)) / 16000
    python = sys.executable
    cli = str(Path(python).with_name("voxprint"))
    startup = [["Python interpreter alone (`python -c pass`)", child_seconds([python, "-c", "pass"])],
               ["`voxprint similarity A B` (PyTorch, bundled model)",
                child_seconds([cli, "similarity", a, b, "--threads", "1"])]]
    startup.append(["`voxprint similarity A B --model ONNX` (torch-free path)",
                    child_seconds([cli, "similarity", a, b, "--threads", "1", "--model", str(scratch / "float32")])])
    startup += [
        ["`voxprint.load_model('default').extract_embedding(A)`",
         child_seconds([python, "-c", f"import voxprint; voxprint.load_model('default').extract_embedding({a!r})"])],
        ["ONNX through voxprint's loader (`load_exported(...).extract_embedding(A)`)",
         child_seconds([python, "-c", "from voxprint.export import load_exported; "
                                      f"load_exported({str(scratch / 'float32')!r}).extract_embedding({a!r})"])],
        ["ONNX without torch (`StandaloneEmbedder(...).extract_embedding(A)`)",
         child_seconds([python, "-c", "from voxprint.export.standalone import StandaloneEmbedder; "
                                      f"StandaloneEmbedder({str(scratch / 'float32')!r}).extract_embedding({a!r})"])],
    ]
    startup_rows = [[what, f"{t:.2f}" if isinstance(t, float) else t] for what, t in startup]
    print(startup_rows, flush=True)

    stream = np.concatenate(waves)[: int(args.stream_seconds * 16000)]
    stream_rows = []
    for name in ("PyTorch eager", "onnxruntime float32", "onnxruntime int8"):
        result = streaming_latency(systems[name], stream, 1600)
        stream_rows.append([name, f"{1000 * result['mean']:.1f}", f"{1000 * result['p95']:.1f}",
                            f"{1000 * result['max']:.1f}", f"{result['mean'] / 0.1:.2f}", f"{result['cosine']:.6f}"])
        print(stream_rows[-1], flush=True)

    import soundfile

    trials = read_trials(dev / "trials.txt")
    dev_seconds = sum(soundfile.info(str(path)).duration for path in folder.wav.values())
    reference = None
    eer_rows = []
    for name, model in (("PyTorch (traced, as `voxprint eval`)", voxprint.load_model("default")),
                        ("PyTorch traced bfloat16", systems["PyTorch traced bfloat16"]),
                        ("ONNX float32", systems["onnxruntime float32"]), ("ONNX int8", systems["onnxruntime int8"])):
        result = dev_evaluation(model, dev, trials, reference)
        if reference is None:
            reference = result["embeddings"]
        eer_rows.append([name, f"{100 * result['eer']:.3f}", f"{result['min_dcf_0.01']:.3f}",
                         f"{100 * result['far']:.3f}", f"{100 * result['cosine_eer']:.3f}",
                         f"{result['cos_min']:.5f} / {result['cos_mean']:.6f}" if "cos_min" in result else "-",
                         f"{dev_seconds / result['seconds']:.0f}x"])
        print(eer_rows[-1], flush=True)
    load_after = os.getloadavg()

    gflop_per_second = flops / audio_seconds / 1e9
    speed = {name: audio_seconds / seconds for name, seconds in row_seconds.items()}
    ort_peak = peaks.best.get("onnxruntime float32", 1)
    tables = "\n".join([
        f"**Speed** ({args.utterances} dev recordings, {audio_seconds:.0f} s of audio, decoded beforehand; "
        f"{gflop_per_second:.3f} GFLOP per second of audio):", "",
        format_table(["system", "x real time", "GFLOP/s", "peak just before (GFLOP/s)", "of peak",
                      "ceiling at peak"], speed_rows), "",
        "**Where the time goes** (onnxruntime's profiler over the same recordings, one thread: each graph's "
        "node time by operator group; and the front-end's share of the int8 rows, timed alone):", "",
        format_table(["operator group", "float32 graph", "int8 graph"], breakdown_rows), "",
        format_table(["part of a row", "share of its time"], front_end), "",
        "**Peak** (one 2048 x 2048 x 2048 matrix product, best of the run): "
        + ", ".join(f"{k} {v:.0f} G{'OP' if 'int8' in k else 'FLOP'}/s" for k, v in peaks.best.items())
        + ". The float32 rows are compared with the faster float32 GEMM, the bfloat16 row with torch's bfloat16 "
          "GEMM, the int8 rows with the u8 x s8 GEMM (GOP/s).", "",
        f"**Process start to first embedding** (fresh process, median of 3; a {first_seconds:.1f} s dev recording; "
        "`similarity` embeds two):", "",
        format_table(["command", "seconds"], startup_rows), "",
        f"**Streaming** (100 ms chunks of a {args.stream_seconds:.0f} s stream; recent 3 s and whole-stream "
        "embeddings updated on every chunk):", "",
        format_table(["system", "mean latency (ms)", "p95 (ms)", "max (ms)", "latency / chunk",
                      "final vs offline cosine"], stream_rows), "",
        "**Full dev set** (480 recordings, 114,960 trials; the model's back-end: PLDA + calibration; "
        "threshold from meta.json):", "",
        format_table(["system", "EER %", "minDCF(0.01)", "FAR at threshold %", "cosine EER %",
                      "cosine to PyTorch (min / mean)", "x real time (decode incl.)"], eer_rows),
    ])
    if args.dry_run:
        print(tables)
        return
    publish_benchmark(SECTION, ".venv/bin/python bench/export.py",
                      f"One thread (torch and onnxruntime). Load average before/after: "
                      f"{load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores.", [
        f"The bundled ECAPA-TDNN exported with `voxprint export` ({export_seconds:.1f} s; int8 {int8_seconds:.1f} s,",
        "calibrated on 48 training recordings at the 99.99th percentile of each activation). The front-end",
        "(Kaldi filterbank) stays outside the graph in every row, so features are included in every timing.",
        "GFLOP/s counts the same operations for every system (torch's FlopCounterMode on the eager run), so",
        "the int8 row is operations per second against the int8 GEMM peak. A load average above 1 means other",
        "jobs shared the two cores: speeds are then lower and noisier than on an idle core, which is why each",
        "fraction of peak is taken against a GEMM measured just before, under the same load.",
        "",
        f"What limits the speed: the operations themselves. At {gflop_per_second:.3f} GFLOP per second of audio, "
        "the GEMM peak",
        "allows at most the \"ceiling\" column (every counted operation, front-end included, at peak); a",
        f"float32 speed of 500x would need {100 * 500 * gflop_per_second / ort_peak:.0f} % of onnxruntime's float32 "
        "peak over the whole",
        "pipeline, and the float32 graph's time is mostly its convolutions (conv + ReLU fused, at small",
        "sizes: 24-channel Res2Net groups, a few hundred frames; \"Where the time goes\" below)"
        + (f", which already run at {convolution_rate:.0f} GFLOP/s, {100 * convolution_rate / ort_peak:.0f} % of "
           "that peak (their operations over their kernel time in onnxruntime's profiler)" if convolution_rate else "")
        + ". In int8 the",
        "quantized convolutions are a smaller share; the rest is float work between them that int8 cannot",
        "remove: the attention softmax and weighted statistics, squeeze-excitation products, batch norms",
        "after ReLU (they cannot fold into the convolution before them; moving their scale into it leaves an",
        "add of the shift, and letting onnxruntime drop the layout transposes that way made the float",
        "operations slower), quantize/dequantize conversions and transposes, and the front-end. Measured and",
        "kept in earlier runs: Res2Net groups cut by one constant Split (fewer graph nodes), a filterbank with",
        "preallocated buffers (bit for bit the same frames), and numpy filterbanks on the torch-free path",
        "(kaldi-native-fbank's frame-by-frame OnlineFbank cost more than the int8 encoder), computed in float32",
        "with scipy's FFT (numpy's was slower) and one pre-emphasis pass over the waveform, in blocks of "
        f"{KaldiFbank.BLOCK_FRAMES} frames",
        "whose arrays stay below glibc's mmap threshold (in a process that has not imported torch, as the CLI,",
        "blocks of 128 frames had their spectra faulted in afresh: the torch-free rows are timed in such a",
        "process). Measured and not kept: QDQ instead of QOperator, quantizing ReLU/Add/Mul/Concat, leaving the",
        "small Gemms or Res2Net's 24-channel group convolutions in float32 (more accurate, slower), session",
        "options other than onnxruntime's defaults, and bfloat16 in PyTorch",
        f"(oneDNN's AVX-512 BF16 kernels: {speed['PyTorch traced bfloat16']:.0f}x in this run, against "
        f"{speed['PyTorch traced (optimize)']:.0f}x for PyTorch's traced float32 and "
        f"{speed['onnxruntime float32']:.0f}x for onnxruntime's float32: its GEMM peak is well above float32's (the",
        "peak line), but the small convolutions of this model get little of it).",
        "Process start: importing torch alone takes about 3 s here, and `load_model`",
        "imports it whatever the model; `voxprint similarity` on an ONNX folder runs the torch-free",
        "`StandaloneEmbedder` (numpy filterbanks + onnxruntime) and never imports torch. Streaming re-embeds",
        "the end-aligned window on every",
        "chunk (up to one 30 s window for this model), so its cost grows to a 30 s embedding per chunk;",
        "`whole_every` trades freshness for cost.",
    ], tables)


if __name__ == "__main__":
    main()
