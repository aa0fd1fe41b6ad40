"""``export_model``: write a trained model's encoder as an ONNX or TorchScript graph in a new model folder.

The steps, each checked before the next:

1. load the source model (weights hash, back-end manifest, ``meta.json``) and refuse an export of an export;
2. make an exportable copy of the encoder (:mod:`voxprint.export.rewrite`) and trace it with dynamic
   batch and time axes (ONNX: torch's TorchScript-based exporter, whose traces keep the shape
   arithmetic of the time axis symbolic; it exports every registered encoder in seconds, where the
   dynamo exporter took minutes and failed on three of seven);
3. compare the graph with PyTorch on random frames of three lengths (half a second, two seconds, one
   inference window up to 30 s) in a batch of two: every embedding must reach cosine
   :data:`PARITY_MIN_COSINE`, or the export is refused (a trace that froze a length shows up here);
4. with ``quantize="int8"``: quantize statically on windows of training audio and check held-out
   windows (:mod:`voxprint.export.quantize`);
5. copy the config, ``meta.json`` and the back-end (each back-end file checked against its manifest
   first), then write ``export.json`` (:mod:`voxprint.export.metadata`) last.

Everything is written into a hidden sibling folder that replaces ``out_dir`` only when complete, so an
interrupted export leaves no half-written model folder.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from voxprint.config import save_config
from voxprint.errors import ConfigError, DataError, ModelError
from voxprint.export.metadata import (
    ENCODER_FILES,
    FORMAT_VERSION,
    describe_frontend,
    describe_inference,
    json_ready,
    write_export_record,
)
from voxprint.export.quantize import CALIBRATION_SECONDS, INT8_MIN_COSINE, calibration_crops, calibration_inputs, quantize_int8
from voxprint.export.rewrite import exportable_encoder
from voxprint.export.runtime import INSTALL_HINT, is_export
from voxprint.export.standalone import onnxruntime_session
from voxprint.fileio import atomic_write_text
from voxprint.runs import BACKEND_DIR, CONFIG_FILE, META_FILE, read_meta, resolve_model_dir, verify_manifest
from voxprint.runs.integrity import hash_file, read_manifest

__all__ = ["DEFAULT_OPSET", "FORMATS", "PARITY_MIN_COSINE", "QUANTIZATIONS", "export_model"]

FORMATS = ("onnx", "torchscript")
QUANTIZATIONS = (None, "int8")
#: 17 is the first opset with the STFT/LayerNormalization operators; every registered encoder exports at it.
DEFAULT_OPSET = 17
#: The least cosine between an exported float32 graph's embeddings and PyTorch's.
PARITY_MIN_COSINE = 0.9999
#: Training recordings held out of the calibration to check the int8 graph.
HELD_OUT_UTTERANCES = 8


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, E) arrays."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-30)


def _probe_lengths(model: Any) -> list[int]:
    """Frames of half a second, two seconds and one inference window (at most 30 s)."""
    frontend, rate = model.model.frontend, model.sample_rate
    window = min(model.window_frames, frontend.num_frames(30 * rate))
    return sorted({frontend.num_frames(int(0.5 * rate)), frontend.num_frames(2 * rate), window})


def _input_dim(model: Any) -> int:
    return int(getattr(model.model.frontend, "dim", None) or model.config["features"]["n_mels"])


def _parity(run: Callable[[np.ndarray], np.ndarray], encoder: nn.Module, inputs: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """Least cosine between ``run``'s and ``encoder``'s embeddings over ``inputs``, and each input's least."""
    worst = []
    with torch.inference_mode():
        for x in inputs:
            reference = encoder(torch.from_numpy(x)).numpy()
            worst.append(float(_cosines(reference, np.asarray(run(x))).min()))
    return min(worst), worst


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' tracer and deprecation chatter (the parity check judges the result)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _write_onnx(encoder: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; a clear message beats its ImportError)
    except ImportError:
        raise ModelError(f"ONNX export needs the onnx package; {INSTALL_HINT}") from None
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(encoder, (example,), str(path), input_names=["frames"], output_names=["embeddings"],
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes={"frames": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}})
    except Exception as exc:  # the exporter raises many types for an unsupported operator
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"this encoder cannot be exported to ONNX: {type(exc).__name__}: {detail[:300]}") from None


def _write_torchscript(encoder: nn.Module, example: torch.Tensor, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(encoder, example, check_trace=False)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"this encoder cannot be traced: {type(exc).__name__}: {detail[:300]}") from None
    torch.jit.save(traced, str(path))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return traced(torch.from_numpy(x)).numpy()

    return run


def _session_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    session = onnxruntime_session(path, torch.get_num_threads())
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _calibration_paths(config: dict[str, Any], calibration: str | os.PathLike | None, count: int) -> tuple[Path, list[Path]]:
    """The calibration folder and ``count + HELD_OUT_UTTERANCES`` of its recordings, spread over its speakers."""
    from voxprint.data import read_data_folder

    folder = calibration if calibration is not None else config["data"]["train"]
    if folder is None or not (Path(folder) / "wav.scp").is_file():
        where = f"{folder} has no wav.scp" if folder is not None else "the model's config names no training data"
        raise ConfigError(f"int8 quantization needs calibration audio and {where}; pass a data folder of "
                          "training recordings (--calibration DIR)")
    try:
        data = read_data_folder(folder, require_speakers=False)
    except DataError as exc:
        raise ConfigError(f"calibration data: {exc}") from None
    wanted = count + HELD_OUT_UTTERANCES
    ids = data.utterances
    if len(ids) < wanted:
        raise ConfigError(f"calibration data {folder} has {len(ids)} recordings; int8 quantization uses {wanted} "
                          f"({count} to calibrate, {HELD_OUT_UTTERANCES} to check)")
    # Evenly spaced over the sorted ids, so every part of the folder (every speaker range) contributes.
    picks = np.linspace(0, len(ids) - 1, wanted).round().astype(int)
    return Path(folder), [Path(data.wav[ids[i]]) for i in picks]


def _versions() -> dict[str, str | None]:
    import voxprint

    found: dict[str, str | None] = {"voxprint": voxprint.__version__, "torch": torch.__version__}
    for name in ("onnx", "onnxruntime"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def _copy_model_files(source_dir: Path, target: Path, config: dict[str, Any]) -> None:
    """config.yaml, meta.json and the back-end (checked against its manifest before it is copied)."""
    save_config(config, target / CONFIG_FILE)
    meta = read_meta(source_dir)
    if meta:
        atomic_write_text(target / META_FILE, json.dumps(meta, indent=1))
    backend = source_dir / BACKEND_DIR
    if backend.is_dir():
        manifest = read_manifest(backend) or {}
        verify_manifest(backend, manifest)  # a corrupted back-end file is refused, not shipped
        shutil.copytree(backend, target / BACKEND_DIR, ignore=shutil.ignore_patterns(".*"))


def _write_graph(source: Any, encoder: nn.Module, graph: Path, format: str, opset: int,
                 calibration_files: tuple[Path, list[Path]] | None, calibration_utterances: int) -> tuple[dict, dict | None]:
    """Write the graph file and check it against PyTorch; returns the parity record and the quantization's.

    The float32 graph (before quantization, for int8) must reach :data:`PARITY_MIN_COSINE` on random
    frames of :func:`_probe_lengths`; the int8 graph must reach :data:`INT8_MIN_COSINE` on held-out
    training windows.
    """
    original = source.model.encoder
    dim = _input_dim(source)
    generator = torch.Generator().manual_seed(0)
    lengths = _probe_lengths(source)
    probes = [torch.randn(2, n, dim, generator=generator).numpy() for n in lengths]
    example = torch.from_numpy(probes[len(probes) // 2][:1])
    quantization = None
    with tempfile.TemporaryDirectory(prefix="voxprint-export-") as work:
        if format == "torchscript":
            run = _write_torchscript(encoder, example, graph)
        else:
            float_graph = Path(work) / "encoder.float32.onnx" if calibration_files else graph
            _write_onnx(encoder, example, float_graph, opset)
            run = _session_runner(float_graph)
        parity, per_length = _parity(run, original, probes)
        if parity < PARITY_MIN_COSINE:
            raise ModelError(f"the exported graph disagrees with PyTorch (cosine {parity:.6f} < {PARITY_MIN_COSINE} at "
                             f"{lengths[int(np.argmin(per_length))]} frames); this encoder cannot be exported faithfully")
        norms = np.linalg.norm(np.asarray(run(probes[0])), axis=1)
        if calibration_files:
            folder, paths = calibration_files
            crop = min(source.window_frames,
                       source.model.frontend.num_frames(int(CALIBRATION_SECONDS * source.sample_rate)))
            inputs = calibration_crops(calibration_inputs(source, paths[:calibration_utterances]), crop)
            held_out = calibration_inputs(source, paths[calibration_utterances:])
            quantization = quantize_int8(float_graph, graph, inputs)
            int8_cosine, _ = _parity(_session_runner(graph), original, held_out)
            if int8_cosine < INT8_MIN_COSINE:
                raise ModelError(f"int8 quantization degrades this encoder too much (cosine {int8_cosine:.4f} < "
                                 f"{INT8_MIN_COSINE} on held-out training windows); export it in float32")
            quantization.update(calibration_data=str(folder), calibration_utterances=calibration_utterances,
                                held_out_utterances=HELD_OUT_UTTERANCES, held_out_min_cosine=int8_cosine)
    record = {"min_cosine": parity, "probe_frames": lengths, "probe": "random normal frames, batches of 2",
              "required": PARITY_MIN_COSINE, "unit_norm": bool(np.allclose(norms, 1.0, atol=1e-3))}
    if calibration_files:
        record["graph"] = "the float32 graph, before quantization (see quantization.held_out_min_cosine)"
    return record, quantization


def _rewrites(original: nn.Module, exported: nn.Module) -> list[str]:
    """``"name: Before -> After"`` for every submodule the exportable copy replaced."""
    found = []
    for name, module in original.named_modules():
        with contextlib.suppress(AttributeError):  # children of a replaced module have no counterpart
            replaced = exported.get_submodule(name)
            if name and type(replaced) is not type(module):
                found.append(f"{name}: {type(module).__name__} -> {type(replaced).__name__}")
    return found


def _replace_folder(scratch: Path, out: Path) -> None:
    """Move the finished ``scratch`` folder to ``out``, replacing what was there."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(out, old)
        os.replace(scratch, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(scratch, out)


def export_model(model_dir_or_name: str | os.PathLike, out_dir: str | os.PathLike, format: str = "onnx",
                 quantize: str | None = None, *, calibration: str | os.PathLike | None = None,
                 calibration_utterances: int = 48, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> dict[str, Any]:
    """Export a model's encoder to ``out_dir``, a model folder that ``voxprint.load_model`` loads (ONNX).

    Args:
        model_dir_or_name: ``"default"`` or a trained run folder.
        out_dir: the folder to create (refused when it holds files, unless ``overwrite``).
        format: ``"onnx"`` (run by onnxruntime) or ``"torchscript"`` (for libtorch).
        quantize: None (float32) or ``"int8"`` (static, ONNX only).
        calibration: a data folder of training recordings for int8 (default: the config's ``data.train``).
        calibration_utterances: recordings used to calibrate (8 more are held out to check).
        opset: the ONNX opset.
        overwrite: replace an existing ``out_dir``.

    Returns:
        The ``export.json`` record.

    Raises:
        ConfigError: a bad argument, or no calibration data for int8.
        ModelError: the source cannot be loaded, the encoder cannot be exported, the graph disagrees
            with PyTorch, or int8 quantization degrades it beyond :data:`INT8_MIN_COSINE`.
    """
    from voxprint.inference import load_model

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantize!r}; use int8 or none")
    if quantize and format != "onnx":
        raise ConfigError("int8 quantization is for ONNX exports (onnxruntime); use --format onnx")
    if calibration_utterances < 1:
        raise ConfigError(f"calibration_utterances must be at least 1, got {calibration_utterances}")
    source_dir = resolve_model_dir(model_dir_or_name)
    if is_export(source_dir):
        raise ModelError(f"{source_dir} is already an exported model; export its source model instead")
    from voxprint.inference.fused import is_fusion

    if is_fusion(source_dir):
        raise ModelError(f"{source_dir} is a fusion of models with no weights of its own; export each of its parts "
                         "and fuse the exports with `voxprint fuse-models`")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already holds files; choose an empty folder or pass --overwrite")
    if out.resolve() == source_dir.resolve():
        raise ConfigError(f"{out} is the source model's folder; export into another folder")
    if format == "onnx":
        try:
            import onnxruntime  # noqa: F401  (checked before the slow part)
        except ImportError:
            raise ModelError(f"ONNX export is checked with onnxruntime, which is not installed; {INSTALL_HINT}") from None

    source = load_model(model_dir_or_name)
    config = source.config
    if getattr(source.model.encoder, "statistical", False):
        # A trace of numpy code would record one recording's numbers as constants, not the computation.
        raise ModelError(f"{config['model']['name']} is computed in numpy (UBM posteriors, then MAP adaptation or a "
                         "linear solve per recording), which neither ONNX nor TorchScript can trace; deploy its "
                         "run folder as it is (it loads without onnxruntime)")
    calibration_files: tuple[Path, list[Path]] | None = None
    if quantize:  # before the slow part: a missing calibration folder fails at once
        calibration_files = _calibration_paths(config, calibration, calibration_utterances)
    original = source.model.encoder
    encoder = exportable_encoder(original)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f".{out.name}.export-{os.getpid()}-{secrets.token_hex(4)}"
    scratch.mkdir()
    try:
        graph = scratch / ENCODER_FILES[format]
        parity, quantization = _write_graph(source, encoder, graph, format, opset, calibration_files,
                                            calibration_utterances)
        _copy_model_files(source_dir, scratch, config)
        record = {
            "format_version": FORMAT_VERSION,
            "format": format,
            "file": graph.name,
            "sha256": hash_file(graph),
            "precision": "int8" if quantize else "float32",
            "opset": opset if format == "onnx" else None,
            "input": {"name": "frames", "shape": ["batch", "frames", _input_dim(source)], "dtype": "float32"},
            "output": {"name": "embeddings", "shape": ["batch", int(source.embedding_dim)], "dtype": "float32",
                       "unit_norm": parity.pop("unit_norm")},
            "embedding_dim": int(source.embedding_dim),
            "frontend": describe_frontend(source.model, config),
            "inference": describe_inference(config, int(source.model.frontend.frame_shift), source.sample_rate),
            "source": {"model": str(model_dir_or_name), "folder": str(source_dir), "identity": source.identity},
            "rewrites": _rewrites(original, encoder),
            "parity": parity,
            "quantization": quantization,
            "versions": _versions(),
            "config": config,
        }
        record = json_ready(record)
        write_export_record(scratch, record)
        _replace_folder(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return record
