"""Deployment: export a trained model's encoder to ONNX (run by onnxruntime, optionally int8) or TorchScript.

``export_model("default", "exp/default-onnx")`` (``voxprint export``) writes a model folder::

    OUT/
      encoder.onnx     the encoder graph: frames (batch, frames, dim) -> embeddings (batch, E), both axes dynamic
                       (encoder.torchscript for --format torchscript)
      export.json      the graph's SHA-256, the front-end and inference parameters, parity, provenance, config
      config.yaml      the model's config, for people
      meta.json        the accept threshold and its back-end, as in the source
      backend/         the source's back-end files and their manifest

``voxprint.load_model(OUT)`` loads an ONNX folder through :func:`load_exported` (every verb then uses it with
the same back-end and threshold); a TorchScript folder is for libtorch and is not loaded (it is code).

**Where the front-end lives: outside the graph**, with every parameter that changes the frames written to
``export.json`` (sample rate, sample scaling, frame length/shift, FFT size, window, pre-emphasis, DC
removal, mel range, log floor, dither 0, snip-edges; the mean normalisation; inference window, hop
and minimum duration; Kaldi's names for the same options). Reasons:

- *Frames are shared between windows.* Inference embeds overlapping windows (50 % by default): with
  the front-end inside, each frame would be computed once per window that holds it (twice), or the
  graph would have to take whole recordings and hold hours of audio at once; outside, frames are
  computed once, in 60 s chunks (bounded memory), and only the encoder runs per window.
- *Mean normalisation needs the frames outside a window.* ``sliding`` normalisation spans
  neighbouring windows; ``segment`` normalisation is per window and stays outside the graph so that
  the graph is exactly the encoder contract, ``frames -> embeddings``.
- *The features are standard and reproducible without torch.* They are Kaldi filterbanks
  (``--dither=0 --snip-edges=true``), checked against kaldi-native-fbank in the test suite, so a
  runtime without torch computes identical frames from the recorded options; a Kaldi-compatible
  ``STFT`` graph (povey window, pre-emphasis within each frame, DC removal, the Nyquist-free mel
  matrix) would be a second implementation of the same thing to keep in step.
- *The time is in the encoder.* Filterbanks run at over 1,000x real time on one core, 15-20 % of an
  embedding's time even with the int8 encoder; a graph would not compute them faster.

The loader rebuilds the front-end from the recorded config and refuses the folder if its description
differs from the recorded one, so a later voxprint whose feature code changed cannot silently feed the
graph other frames.

**What still needs torch** when an ONNX folder is loaded by ``load_model``: the front-end (voxprint's
torch filterbank), the sliding-window embedder and :class:`~voxprint.inference.SpeakerModel`. The graph,
``export.json``, the audio decoding and the back-ends do not: :class:`~voxprint.export.standalone.StandaloneEmbedder`
embeds with kaldi-native-fbank, numpy and onnxruntime only, and shares the rest of a model's interface
(:class:`~voxprint.backends.verifier.WindowedEmbedder`: bulk embedding, trial lists, back-end, store identity).
The CLI's ``embed``, ``eval``, ``eval-id``, ``similarity``, ``verify`` (files or ``--store``), ``enroll`` and
``identify`` run an ONNX folder through it without importing torch (``embed --data`` sharded under torchrun
too). ``diarize``, ``spot``, ``serve``, ``clean`` and ``store reembed`` still load it with ``load_model``.

onnx, onnxruntime and kaldi-native-fbank are optional (``pip install 'voxprint[onnx]'``): they are
imported only when an ONNX model is exported or loaded (kaldi-native-fbank: by the standalone embedder).

The hook at the top of :func:`voxprint.inference.load_model` (before the device is resolved, so
``device="auto"`` means the CPU for an export)::

    from voxprint.export import load_exported  # an exported folder runs its graph in onnxruntime
    if (exported := load_exported(resolve_model_dir(name_or_dir), device, max_seconds)) is not None:
        return exported
"""
from __future__ import annotations

import importlib
from typing import Any

# Names resolve on first use (PEP 562), so `voxprint.export.standalone` can be imported without the
# torch-based exporter and loader.
_EXPORTS = {
    "DEFAULT_OPSET": "exporter", "FORMATS": "exporter", "PARITY_MIN_COSINE": "exporter", "QUANTIZATIONS": "exporter",
    "export_model": "exporter", "EXPORT_FILE": "metadata", "describe_frontend": "metadata",
    "read_export_record": "metadata", "OnnxEncoder": "runtime", "is_export": "runtime", "load_exported": "runtime",
    "StandaloneEmbedder": "standalone",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
