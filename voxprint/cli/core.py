"""Shared parts of the ``voxprint`` command: the verb registry, common options, output and argument checks,
the parser and ``main``. The verbs live in the sibling modules, one per concern."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from voxprint import __version__
from voxprint.errors import VoxprintError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REJECT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EMBEDDING_SUFFIXES = (".npz", ".ark")


@dataclass(frozen=True)
class Verb:
    """One sub-command: its parser set-up, what it does, and a usage example for its help."""

    name: str
    help: str
    example: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: True for arguments this verb runs without torch (then torch is neither imported nor configured).
    torch_free: Callable[[argparse.Namespace], bool] | None = None


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, example: str, arguments: Callable[[argparse.ArgumentParser], None],
         torch_free: Callable[[argparse.Namespace], bool] | None = None,
         ) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as the sub-command ``name`` (its parser is built by ``arguments``;
    ``torch_free`` says for which arguments it runs without torch)."""

    def decorator(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        VERBS[name] = Verb(name, help, example, arguments, run, torch_free)
        return run

    return decorator


# ---------------------------------------------------------------------------------------------- shared options

def default_threads() -> int:
    """Torch threads when ``--threads`` is not given: ``VOXPRINT_THREADS``, else half the usable cores.

    Half, because decoding, data loading and whatever else runs on the machine need cores too; a
    busy 2-core machine with torch's default (all cores) ran training about 40x slower than with
    one thread (docs/benchmarks.md, "Threads").
    """
    env = os.environ.get("VOXPRINT_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise VoxprintError(f"VOXPRINT_THREADS must be a whole number, not {env!r}") from None
        if value < 1:
            raise VoxprintError(f"VOXPRINT_THREADS must be at least 1, not {value}")
        return value
    return max(1, len(os.sched_getaffinity(0)) // 2)


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def rate(text: str) -> float:
    """argparse type: a rate strictly between 0 and 1."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a rate between 0 and 1 (e.g. 0.01 for 1 %), got {text}")
    return value


def model_options(p: argparse.ArgumentParser, required: bool = False, from_store: bool = False) -> None:
    """Add ``--model``, ``--device``, ``--threads`` and ``--max-seconds`` (every verb that runs a model).

    With ``from_store`` (verbs that open a ``--store``), a missing ``--model`` is the model the store was made
    with (:func:`default_model`), so a store made with ``--model fused`` is used with it without repeating it.
    """
    if required:
        p.add_argument("--model", required=True, help="trained run folder")
    elif from_store:
        p.add_argument("--model", default=None, help="trained run folder, or a built-in model ('default', 'ivector', "
                                                     "'fused'); default: the model --store was made with, else "
                                                     "'default'")
    else:
        p.add_argument("--model", default="default", help="trained run folder, or a built-in model ('default', "
                                                          "'ivector', 'fused'; default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA when available; default: cpu)")
    thread_option(p)
    p.add_argument("--max-seconds", type=positive_float, default=4 * 3600.0,
                   help="refuse recordings longer than this (default: 4 hours)")


def thread_option(p: argparse.ArgumentParser) -> None:
    """Add ``--threads``."""
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: $VOXPRINT_THREADS, else half the usable cores)")


def json_option(p: argparse.ArgumentParser) -> None:
    """Add ``--json``."""
    p.add_argument("--json", action="store_true", help="print results as JSON, one object per line")


def quiet_option(p: argparse.ArgumentParser) -> None:
    """Add ``--quiet``."""
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def on_error_option(p: argparse.ArgumentParser) -> None:
    """Add ``--on-error fail|skip`` (batch verbs)."""
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="a recording that cannot be embedded: fail (default; every file is checked first and the "
                        "bad ones counted) or skip it and report it (scores that need it are reported missing)")


def emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    """Print one result: a JSON line with ``--json``, else the human-readable text."""
    print(json.dumps(record) if getattr(args, "json", False) else text, flush=True)


def check_output_path(path: str | os.PathLike, what: str, suffixes: Sequence[str] | None = None) -> Path:
    """Check before any slow work that ``path`` has an accepted suffix and can be written.

    The folder is created if needed and probed with a real (immediately removed) file, because
    permission bits alone do not tell (root, read-only mounts).
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise VoxprintError(f"{what} {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise VoxprintError(f"{what} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.voxprint-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise VoxprintError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None
    return path


def check_writable_folder(path: str | os.PathLike, what: str) -> Path:
    """Like :func:`check_output_path` for an output folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise VoxprintError(f"{what} {folder} exists and is not a folder")
    check_output_path(folder / "probe", what)
    return folder


def load_cli_model(args: argparse.Namespace):
    """The model named by ``--model``, on ``--device``, with ``--max-seconds`` (a
    :class:`~voxprint.inference.SpeakerModel`, which imports torch; see :func:`load_cli_embedder`)."""
    from voxprint.inference import load_model

    return load_model(args.model, device=args.device, max_seconds=args.max_seconds)


def names_standalone_export(args: argparse.Namespace) -> bool:
    """True when ``--model`` is an exported ONNX folder run on the CPU: the torch-free embedder
    (:class:`~voxprint.export.standalone.StandaloneEmbedder`) may run it, which starts in a fraction of
    the seconds importing torch takes."""
    from voxprint.export.metadata import EXPORT_FILE

    return str(args.device) in ("cpu", "auto") and (Path(args.model) / EXPORT_FILE).is_file()


def load_cli_embedder(args: argparse.Namespace):
    """The torch-free embedder of an ONNX export when it supports the export (see
    :func:`names_standalone_export`), else :func:`load_cli_model`.

    Both are a :class:`~voxprint.backends.verifier.WindowedEmbedder` (bulk embedding, data folders, trial
    lists, the back-end and threshold, what a speaker store needs, the same store identity), so a verb
    written against that interface runs an export without torch; one that needs more of
    :class:`~voxprint.inference.SpeakerModel` (its torch module, streaming) uses :func:`load_cli_model`.

    Raises:
        ModelError: the model cannot be loaded (see :func:`voxprint.inference.load_model`).
    """
    if names_standalone_export(args):
        from voxprint.export.metadata import read_export_record
        from voxprint.export.standalone import StandaloneEmbedder

        if StandaloneEmbedder.supports(read_export_record(args.model, check_hash=False)):
            return StandaloneEmbedder(args.model, threads=args.threads or default_threads(),
                                      max_seconds=args.max_seconds)
        set_torch_threads(args)  # main() left torch alone for this export; it needs voxprint's loader after all
    return load_cli_model(args)


def refuse_builtin(model: str, action: str) -> None:
    """Refuse an action that writes into a run folder when ``model`` names a built-in model."""
    from voxprint.runs import is_builtin

    if is_builtin(model):
        raise VoxprintError(f"{action} writes into a trained run folder, not the built-in model {model!r}; "
                            "train one with `voxprint train`")


def report_skipped(skipped: dict[str, str]) -> None:
    """Skipped recordings are never dropped silently: each is named on stderr."""
    for name, reason in skipped.items():
        print(f"voxprint: skipped {name}: {reason}", file=sys.stderr)


def format_metrics(result: dict) -> str:
    """EER and minDCFs as one human-readable line."""
    return (f"EER {100 * result['eer']:.2f}%  minDCF(0.01) {result['min_dcf_0.01']:.3f}  "
            f"minDCF(0.001) {result['min_dcf_0.001']:.3f}  ({result['trials']} trials, {result['targets']} targets)")


# ----------------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The ``voxprint`` argument parser: one sub-parser per registered verb, each with an example."""
    parser = argparse.ArgumentParser(
        prog="voxprint", description="Speaker recognition: train, embed, score, verify.",
        epilog="exit codes: 0 ok (verify: accept), 1 error, 2 usage error, 3 verify: reject",
    )
    parser.add_argument("--version", action="version", version=f"voxprint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for v in VERBS.values():
        p = sub.add_parser(v.name, help=v.help, description=v.help, epilog=f"example:\n  {v.example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        v.arguments(p)
    return parser


def set_torch_threads(args: argparse.Namespace) -> None:
    """Give torch the ``--threads`` of a verb that has the option (importing torch)."""
    if "threads" not in args:
        return
    import torch

    torch.set_num_threads(args.threads or default_threads())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (e.g. main() called twice in tests)
        pass


def default_model(args: argparse.Namespace) -> str:
    """The model of a verb whose ``--model`` was not given: the one its ``--store`` records (its ``--model``
    name, when the store has one), else the bundled ``default``."""
    from voxprint.store.sqlite import recorded_model_name

    store = getattr(args, "store", None)
    return (recorded_model_name(store) if store else None) or "default"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code (see the module)."""
    args = build_parser().parse_args(argv)
    try:
        if "model" in args and args.model is None:
            args.model = default_model(args)
        chosen = VERBS[args.command]
        if chosen.torch_free is None or not chosen.torch_free(args):
            set_torch_threads(args)
        return chosen.run(args)
    except VoxprintError as exc:
        print(f"voxprint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a file the user named could not be read or written
        where = f" {exc.filename}" if exc.filename else ""
        print(f"voxprint: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("voxprint: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
