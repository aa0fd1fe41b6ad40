"""The ``export`` verb: a model's encoder as an ONNX (optionally int8) or TorchScript graph in a new model folder."""
from __future__ import annotations

import argparse

from voxprint.cli.core import EXIT_OK, check_writable_folder, emit, json_option, positive_int, thread_option, verb


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model to export: 'default' (the bundled model) or a trained run folder")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx",
                   help="onnx: run by onnxruntime, loadable by voxprint.load_model and every verb (needs "
                        "voxprint[onnx]); torchscript: for libtorch/C++ (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder to create: the exported model folder (graph, export.json, "
                                                "config, meta.json, back-end)")
    p.add_argument("--quantize", choices=["int8"],
                   help="static int8 quantization (ONNX only), calibrated on training recordings")
    p.add_argument("--calibration", help="with --quantize: data folder of training recordings to calibrate on "
                                         "(default: the model's data.train)")
    p.add_argument("--calibration-utterances", type=positive_int, default=48,
                   help="with --quantize: recordings to calibrate on; 8 more are held out to check the result "
                        "(default: %(default)s)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already holds files")
    thread_option(p)
    json_option(p)


@verb("export", "export a model's encoder to ONNX (optionally int8) or TorchScript, with parity checked",
      "voxprint export --model default --format onnx --out exp/default-onnx --quantize int8\n"
      "  voxprint similarity a.flac b.flac --model exp/default-onnx", _export_args)
def _export(args: argparse.Namespace) -> int:
    from voxprint.errors import VoxprintError
    from voxprint.export import export_model

    if (args.calibration or args.calibration_utterances != 48) and not args.quantize:
        raise VoxprintError("--calibration and --calibration-utterances only apply with --quantize int8")
    if args.quantize and args.format != "onnx":
        raise VoxprintError("--quantize int8 is for ONNX exports (onnxruntime); use --format onnx")
    check_writable_folder(args.out, "--out")
    record = export_model(args.model, args.out, format=args.format, quantize=args.quantize,
                          calibration=args.calibration, calibration_utterances=args.calibration_utterances,
                          opset=args.opset, overwrite=args.overwrite)
    summary = {"out": args.out, "format": record["format"], "precision": record["precision"],
               "file": record["file"], "sha256": record["sha256"], "parity_min_cosine": record["parity"]["min_cosine"],
               "rewrites": record["rewrites"]}
    if record["quantization"]:
        summary["int8_held_out_min_cosine"] = record["quantization"]["held_out_min_cosine"]
    text = (f"exported {args.model} to {args.out}/{record['file']} ({record['format']}, {record['precision']}); "
            f"parity with PyTorch: cosine >= {record['parity']['min_cosine']:.7f}")
    if record["quantization"]:
        text += f"; int8 vs float on held-out audio: cosine >= {record['quantization']['held_out_min_cosine']:.4f}"
    emit(args, summary, text)
    return EXIT_OK
