"""``export.json``: what an exported model folder holds and everything a runtime needs to feed its graph.

The record is written last, so its presence marks a complete export. It carries

- the graph: its file, format, precision, opset, input and output names and shapes, and the SHA-256 of
  its bytes (checked at every load, so a corrupted graph is refused before it embeds anything);
- the front-end that stays outside the graph (:func:`describe_frontend`): every constructor argument
  of the feature extractor, the values derived from them (frame length and shift in samples, FFT size,
  sample scaling), the fixed Kaldi choices (dither 0, snip edges, no energy) and, for filterbank
  front-ends, the same options in kaldi-native-fbank's names, so a runtime without torch can compute
  identical frames;
- the mean normalisation and the inference windows (length, overlap, hop, minimum duration, VAD);
- where it came from (source model, weights hash, identity), the measured parity, the quantization
  and its calibration, the library versions, and the complete config.

Example:
    >>> from voxprint.config import load_config
    >>> from voxprint.models import build_embedding_model
    >>> config = load_config(None, {"features": {"n_mels": 80}})
    >>> frontend = describe_frontend(build_embedding_model(config), config)
    >>> frontend["sample_rate"], frontend["frame_length"], frontend["frame_shift"], frontend["sample_scale"]
    (16000, 400, 160, 32768.0)
    >>> frontend["kaldi"]["dither"], frontend["kaldi"]["num_bins"], frontend["normalization"]["mode"]
    (0.0, 80, 'segment')
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

from voxprint.errors import ModelError
from voxprint.fileio import atomic_write_text
from voxprint.registry import FRONTENDS

__all__ = ["ENCODER_FILES", "EXPORT_FILE", "FORMAT_VERSION", "describe_frontend", "describe_inference",
           "kaldi_fbank_options", "read_export_record", "write_export_record"]

#: The record of an exported model folder.
EXPORT_FILE = "export.json"
#: Version of the record's layout; a reader refuses versions it does not know.
FORMAT_VERSION = 1
#: The graph file of each export format.
ENCODER_FILES = {"onnx": "encoder.onnx", "torchscript": "encoder.torchscript"}

# Kaldi's window names for voxprint's (kaldi_window).
_KALDI_WINDOWS = {"povey": "povey", "hamming": "hamming", "hann": "hanning"}
# Kaldi's option names (kaldi-native-fbank's FbankOptions/MfccOptions) for the front-end options.
_KALDI_NAMES = {"frame_length_ms": "frame_length_ms", "frame_shift_ms": "frame_shift_ms",
                "preemphasis": "preemph_coeff", "remove_dc_offset": "remove_dc_offset", "window": "window_type",
                "n_mels": "num_bins", "low_freq": "low_freq", "high_freq": "high_freq", "n_mfcc": "num_ceps",
                "cepstral_lifter": "cepstral_lifter"}


def _submodule_value(frontend: Any, name: str) -> Any:
    """An attribute of the front-end or of the first submodule that has it (MFCC keeps its fbank inside)."""
    for module in frontend.modules():
        if hasattr(module, name):
            return getattr(module, name)
    return None


def describe_frontend(model: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of ``model``'s front-end and mean normalisation that changes the frames the graph sees.

    Args:
        model: the :class:`~voxprint.models.EmbeddingModel` (its built ``frontend``).
        config: its merged config (the ``features`` section and ``sample_rate``).

    Returns:
        A JSON-ready dict: ``type``, ``sample_rate``, ``options`` (every constructor argument, defaults
        included), ``frame_length``/``frame_shift`` (samples), ``n_fft``, ``sample_scale`` (the [-1, 1]
        waveform is multiplied by it), ``dither`` (always 0), ``snip_edges``, ``kaldi`` (the options in
        kaldi-native-fbank's names; filterbank front-ends only) and ``normalization``.
    """
    features = config["features"]
    kind = features["type"]
    parameters = inspect.signature(FRONTENDS.get(kind)).parameters
    options = {name: features.get(name, p.default) for name, p in parameters.items()
               if name != "sample_rate" and p.default is not inspect.Parameter.empty}
    frontend = model.frontend
    scale = _submodule_value(frontend, "input_scale")
    description: dict[str, Any] = {
        "type": kind,
        "sample_rate": int(config["sample_rate"]),
        "input": "mono float32 waveform in [-1, 1] at sample_rate",
        "options": options,
        "frame_length": int(frontend.frame_length),
        "frame_shift": int(frontend.frame_shift),
        "n_fft": _submodule_value(frontend, "n_fft"),
        "sample_scale": float(scale) if scale is not None else 1.0,
        "dither": 0.0,
        "snip_edges": True,
        "output_dim": int(getattr(frontend, "dim", None) or features["n_mels"]),
    }
    if "n_mels" in options:  # a Kaldi filterbank front-end (fbank, mfcc): name its options as Kaldi does
        kaldi = {_KALDI_NAMES[k]: v for k, v in options.items() if k in _KALDI_NAMES}
        kaldi["window_type"] = _KALDI_WINDOWS.get(kaldi["window_type"], kaldi["window_type"])
        kaldi.update(samp_freq=float(config["sample_rate"]), dither=0.0, snip_edges=True, use_energy=False,
                     round_to_power_of_two=True)
        if scale is not None and scale != 32768.0:
            # Kaldi reads int16-valued samples; another scale is not expressible as a Kaldi option.
            kaldi["note"] = f"multiply the [-1, 1] waveform by {scale} before computing Kaldi features"
        description["kaldi"] = kaldi
    normalize = features["normalize"]
    description["normalization"] = {
        "mode": normalize,
        "sliding_window_frames": int(features["sliding_window_frames"]) if normalize == "sliding" else None,
        "applied": {"segment": "per inference window: subtract the window's mean frame before the graph",
                    "sliding": "over the whole recording's frames (centred window) before windowing",
                    "none": "none"}.get(normalize, normalize),
    }
    return description


def kaldi_fbank_options(frontend: dict[str, Any]) -> Any:
    """kaldi-native-fbank options that compute a filterbank front-end's frames without torch.

    Feed the resulting ``kaldi_native_fbank.OnlineFbank`` the waveform multiplied by
    ``frontend["sample_scale"]`` (32768: Kaldi reads int16-valued samples).

    Args:
        frontend: the ``frontend`` entry of ``export.json`` (:func:`describe_frontend`).

    Returns:
        A ``kaldi_native_fbank.FbankOptions``.

    Raises:
        ModelError: the front-end is not ``fbank``, or kaldi-native-fbank is not installed.

    Example:
        >>> from voxprint.config import load_config
        >>> from voxprint.models import build_embedding_model
        >>> config = load_config(None, {"features": {"n_mels": 80}})
        >>> opts = kaldi_fbank_options(describe_frontend(build_embedding_model(config), config))
        >>> opts.mel_opts.num_bins, opts.frame_opts.dither, opts.frame_opts.window_type
        (80, 0.0, 'povey')
    """
    if frontend.get("type") != "fbank" or "kaldi" not in frontend:
        raise ModelError(f"kaldi-native-fbank options describe the fbank front-end, not {frontend.get('type')!r}")
    try:
        import kaldi_native_fbank as knf
    except ImportError:
        raise ModelError("computing features without torch needs kaldi-native-fbank: pip install kaldi-native-fbank") from None
    kaldi = frontend["kaldi"]
    options = knf.FbankOptions()
    for name in ("samp_freq", "frame_length_ms", "frame_shift_ms", "dither", "preemph_coeff", "remove_dc_offset",
                 "window_type", "round_to_power_of_two", "snip_edges"):
        setattr(options.frame_opts, name, kaldi[name])
    for name in ("num_bins", "low_freq", "high_freq"):
        setattr(options.mel_opts, name, kaldi[name])
    options.use_energy = kaldi["use_energy"]
    options.eps = frontend["options"]["log_floor"]
    return options


def describe_inference(config: dict[str, Any], frame_shift: int, sample_rate: int) -> dict[str, Any]:
    """The sliding-window settings of inference, in frames and in seconds.

    Args:
        config: the merged config (its ``inference`` and ``vad`` sections).
        frame_shift: the front-end's frame shift in samples.
        sample_rate: the sample rate in Hz.

    Returns:
        ``window_frames``, ``overlap``, ``hop_frames``, ``window_seconds``, ``min_seconds`` and ``vad``.

    Example:
        >>> from voxprint.config import load_config
        >>> describe_inference(load_config(), 160, 16000)["hop_frames"]
        80
    """
    from voxprint.inference.windows import window_starts

    inference = config["inference"]
    window, overlap = int(inference["window_frames"]), float(inference["overlap"])
    return {
        "window_frames": window,
        "overlap": overlap,
        # The hop is what window_starts uses (the last window of a recording is aligned to its end).
        "hop_frames": window_starts(2 * window, window, overlap)[1],
        "window_seconds": window * frame_shift / sample_rate,
        "min_seconds": float(inference["min_seconds"]),
        "last_window": "aligned to the end of the recording; a recording shorter than a window is one window",
        "utterance_embedding": "normalised mean of the L2-normalised window embeddings",
        "vad": config["vad"],
    }


def write_export_record(folder: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``folder/export.json`` atomically (the last file of an export).

    Args:
        folder: the exported model folder.
        record: the record (JSON-ready).

    Returns:
        The file's path.
    """
    return atomic_write_text(Path(folder) / EXPORT_FILE, json.dumps(record, indent=1, allow_nan=False) + "\n")


def read_export_record(folder: str | os.PathLike, check_hash: bool = True) -> dict[str, Any]:
    """The checked ``export.json`` of an exported model folder.

    Args:
        folder: the exported model folder.
        check_hash: compare the graph file's SHA-256 with the recorded one.

    Returns:
        The record.

    Raises:
        ModelError: the record is unreadable, of an unknown version or incomplete, its graph file is
            missing, or the graph does not match its recorded hash; one line naming the file.
    """
    path = Path(folder) / EXPORT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path} is not readable JSON ({detail}); export the model again") from None
    if not isinstance(record, dict):
        raise ModelError(f"{path} must hold a JSON object; export the model again")
    if record.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has format_version {record.get('format_version')!r}; this voxprint reads "
                         f"version {FORMAT_VERSION}: export the model again with this version")
    for key, kind in (("format", str), ("file", str), ("sha256", str), ("config", dict), ("frontend", dict),
                      ("inference", dict), ("embedding_dim", int)):
        if not isinstance(record.get(key), kind):
            raise ModelError(f"{path}: {key} is missing or not a {kind.__name__}; export the model again")
    # The window settings size every recording's work: an overlap near 1 (a window per frame) or a window of
    # no frames would make any input exhaust memory or time, so they are held to what a config allows.
    window, overlap = record["inference"].get("window_frames"), record["inference"].get("overlap")
    if not (isinstance(window, int) and window >= 1 and isinstance(overlap, (int, float)) and 0 <= overlap < 1
            and isinstance(record["frontend"].get("frame_shift"), int) and record["frontend"]["frame_shift"] >= 1):
        raise ModelError(f"{path}: inference.window_frames (a positive count), inference.overlap (in [0, 1)) or "
                         "frontend.frame_shift is out of range; export the model again")
    if record["format"] not in ENCODER_FILES:
        raise ModelError(f"{path}: unknown format {record['format']!r} (known: {', '.join(ENCODER_FILES)})")
    name = record["file"]
    if Path(name).name != name or name in ("", ".", ".."):  # the graph lives in the folder itself
        raise ModelError(f"{path}: file must be a name inside the folder, not {name!r}")
    graph = Path(folder) / name
    if not graph.is_file():
        raise ModelError(f"{graph} is missing; export the model again")
    if check_hash and graph_sha256(graph) != record["sha256"]:
        raise ModelError(f"{graph} does not match the hash recorded when it was exported (corrupted or "
                         "changed); export the model again")
    return record


def graph_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a graph file (as :func:`voxprint.runs.hash_file`, which imports torch).

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def json_ready(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats as None (strict JSON).

    Example:
        >>> json_ready({"a": (1, float("nan")), "b": Path("x")})
        {'a': [1, None], 'b': 'x'}
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)
