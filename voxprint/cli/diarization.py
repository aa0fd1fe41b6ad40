"""Verbs of diarization: ``diarize``, ``eval-diarization``, ``spot`` and ``simulate-conversations``."""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path
from typing import Any, Iterator

from voxprint.cli.core import (
    EXIT_OK,
    EXIT_REJECT,
    check_output_path,
    check_writable_folder,
    emit,
    json_option,
    load_cli_model,
    model_options,
    on_error_option,
    positive_float,
    positive_int,
    quiet_option,
    report_skipped,
    thread_option,
    verb,
)
from voxprint.errors import AudioError, VoxprintError


@contextlib.contextmanager
def _blas_threads() -> Iterator[None]:
    """Cap numpy's BLAS pool at torch's thread count (``--threads``): clustering's eigen-solvers otherwise
    spin on every core, which on a busy machine made one 250-window eigendecomposition 40x slower."""
    import torch

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        yield
        return
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        yield


def _count_options(p: argparse.ArgumentParser) -> None:
    """Add the speaker-count and pipeline options shared by ``diarize`` and ``spot``."""
    p.add_argument("--num-speakers", type=positive_int,
                   help="the number of speakers, when known (instead of --min-speakers/--max-speakers)")
    p.add_argument("--min-speakers", type=positive_int, help="the fewest speakers (default: 1)")
    p.add_argument("--max-speakers", type=positive_int, help="the most speakers (default: 8)")
    p.add_argument("--method", choices=["spectral", "wang", "spectralcluster", "ahc"], default="spectral",
                   help="clustering: spectral (neighbour graph, default), wang (Wang et al. 2018 refinement), "
                        "spectralcluster (Google's package, installed separately) or ahc (average linkage)")
    p.add_argument("--ahc-threshold", type=float, help="the ahc stopping threshold on cosine scores "
                                                       "(default: the one calibrated for the bundled model)")
    p.add_argument("--window", type=positive_float, default=1.5, help="embedding window in seconds (default: 1.5)")
    p.add_argument("--hop", type=positive_float, default=0.75, help="time between windows in seconds (default: 0.75)")
    p.add_argument("--vad", choices=["auto", "silero", "energy"], default="auto",
                   help="speech detection: Silero VAD (auto: when installed) or the energy VAD (default: auto)")
    p.add_argument("--fuse-with", default="auto", metavar="MODEL",
                   help="a second model whose window embeddings are fused with --model's for the clustering: a "
                        "built-in model or a run folder, 'none' for none (default: auto, the one the model names; "
                        "the bundled model names the bundled i-vector extractor)")
    p.add_argument("--no-resegment", action="store_true",
                   help="keep the window clustering's frame labels and count (default: re-segment the speech "
                        "frames with per-speaker GMMs when a UBM is at hand, as with the bundled i-vector, and let "
                        "those GMMs add a speaker the clustering missed)")


def _pipeline_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.num_speakers is not None and (args.min_speakers is not None or args.max_speakers is not None):
        raise VoxprintError("give either --num-speakers or --min-speakers/--max-speakers, not both")
    low = 1 if args.min_speakers is None else args.min_speakers
    high = max(8, low) if args.max_speakers is None else args.max_speakers
    if low > high:
        raise VoxprintError(f"--min-speakers {low} is above --max-speakers {high}")
    options: dict[str, Any] = {"method": args.method, "ahc_threshold": args.ahc_threshold, "window_seconds": args.window,
                               "hop_seconds": args.hop, "vad": args.vad}
    if args.hop > args.window:
        raise VoxprintError(f"--hop {args.hop} must not exceed --window {args.window}")
    if args.no_resegment:
        options["resegment"] = False
    if args.fuse_with == "none":
        options["fuse_with"] = None
    elif args.fuse_with != "auto":
        from voxprint.inference import load_model

        options["fuse_with"] = load_model(args.fuse_with)
    if args.num_speakers is not None:
        options["num_speakers"] = args.num_speakers
    else:
        options.update(min_speakers=low, max_speakers=high)
    return options


def file_ids(paths: list[str]) -> dict[str, str]:
    """RTTM file ids of audio files: each file's name without its extension (which must be unique).

    Raises:
        VoxprintError: two files have the same name, or a name has spaces.

    Example:
        >>> file_ids(["calls/monday.wav", "b.flac"])
        {'monday': 'calls/monday.wav', 'b': 'b.flac'}
    """
    ids: dict[str, str] = {}
    for path in paths:
        name = Path(path).stem
        if not name or re.search(r"\s", name):
            raise VoxprintError(f"{path}: an RTTM file id cannot contain spaces; rename the file or use --data")
        if name in ids:
            raise VoxprintError(f"{ids[name]} and {path} would both be RTTM file {name!r}; rename one or use --data")
        ids[name] = path
    return ids


def _diarize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="recordings to diarize (RTTM file id: the name without extension)")
    p.add_argument("--data", help="diarize every recording of a data folder's wav.scp (RTTM file id: the utterance id)")
    p.add_argument("--out", help="write the segments to this RTTM file")
    p.add_argument("--plot", help="save a timeline PNG (one row per speaker; one recording only)")
    p.add_argument("--ref", help="reference RTTM drawn below the timeline of --plot")
    p.add_argument("--store", help="speaker store: voices identified as enrolled speakers get their ids, "
                                   "the others unknown-1, unknown-2...")
    _count_options(p)
    model_options(p, from_store=True)
    on_error_option(p)
    quiet_option(p)
    json_option(p)


@verb("diarize", "who spoke when: speech detection, window embeddings, clustering; RTTM, JSON or a timeline plot",
      "voxprint diarize meeting.wav --max-speakers 4 --out meeting.rttm --plot meeting.png   |   "
      "voxprint diarize --data data/calls --out calls.rttm", _diarize_args)
def _diarize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from voxprint.diarization import diarize, plot_timeline, read_rttm, write_rttm

    if bool(args.files) == bool(args.data):
        raise VoxprintError("give either recordings or --data DIR (not both)")
    options = _pipeline_options(args)
    if args.out:
        check_output_path(args.out, "--out", (".rttm",))
    if args.plot:
        check_output_path(args.plot, "--plot", (".png",))
    if args.ref and not args.plot:
        raise VoxprintError("--ref is drawn in the --plot timeline; give --plot too")
    reference = read_rttm(args.ref) if args.ref else None
    if args.data:
        from voxprint.data import read_data_folder

        folder = read_data_folder(args.data, require_speakers=False)
        items = {utt: str(folder.wav[utt]) for utt in folder.utterances}
    else:
        items = file_ids(args.files)
    if args.plot and len(items) != 1:
        raise VoxprintError(f"--plot draws one recording; {len(items)} were given")
    store = None
    if args.store:
        from voxprint.cli.store import open_store

        store = open_store(args, loader=load_cli_model)  # the pipeline needs the whole model
        model = store.model
    else:
        model = load_cli_model(args)
    if args.on_error == "fail":
        model.check_files(items, "the input")
    results, skipped = {}, {}
    with _blas_threads():
        for file_id, path in tqdm(items.items(), desc="diarizing", unit="file", disable=args.quiet or len(items) < 2):
            try:
                result = diarize(model, path, store=store, **options)
            except AudioError as exc:
                if args.on_error == "fail":
                    raise
                skipped[file_id] = str(exc)
                continue
            results[file_id] = result
            if not args.out:
                emit(args, {"file": file_id, **result.to_dict()}, _describe(file_id, result))
    report_skipped(skipped)
    if args.out:
        write_rttm(args.out, {fid: r.segments for fid, r in results.items()})
        segments = sum(len(r.segments) for r in results.values())
        emit(args, {"out": args.out, "files": len(results), "segments": segments, "skipped": skipped,
                    "speakers": {fid: r.speakers for fid, r in results.items()}},
             f"wrote {segments} segments of {len(results)} recordings to {args.out}"
             + "".join(f"\n{fid}: {_speakers(r.num_speakers)}" for fid, r in results.items()))
    if args.plot and results:
        file_id, result = next(iter(results.items()))
        ref = reference.get(file_id) if reference is not None else None
        if reference is not None and ref is None:
            print(f"voxprint: note: {args.ref} has no file {file_id!r}; the plot has no reference", file=sys.stderr)
        plot_timeline(args.plot, result.segments, ref, duration=result.duration, title=file_id)
    return EXIT_OK


def _speakers(count: int) -> str:
    return f"{count} speaker" + ("" if count == 1 else "s")


def _describe(file_id: str, result: Any) -> str:
    seconds = result.speaker_seconds()
    head = f"{file_id}: {_speakers(result.num_speakers)} in {result.duration:.1f} s (" + ", ".join(
        f"{s} {seconds[s]:.1f} s" for s in result.speakers) + ")"
    return "\n".join([head] + [f"  {s.start:8.2f} {s.end:8.2f}  {s.speaker}" for s in result.segments])


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ref", required=True, help="reference RTTM")
    p.add_argument("--hyp", required=True, help="system RTTM (e.g. from `voxprint diarize --out`)")
    p.add_argument("--collar", type=float, default=0.25,
                   help="seconds not scored on each side of every reference boundary, as md-eval's -c "
                        "(default: %(default)s; 0 for none)")
    p.add_argument("--skip-overlap", action="store_true", help="do not score regions where the reference has "
                                                               "several speakers (default: overlap is scored)")
    json_option(p)


@verb("eval-diarization", "score an RTTM against a reference: DER (missed, false alarm, confusion), JER, "
      "speaker-count accuracy, per file; always prints the protocol",
      "voxprint eval-diarization --ref ref.rttm --hyp sys.rttm --collar 0.25 --skip-overlap", _eval_args)
def _eval_diarization(args: argparse.Namespace) -> int:
    from voxprint.diarization import read_rttm, score_diarization

    if args.collar < 0:
        raise VoxprintError(f"--collar must not be negative, got {args.collar}")
    reference, hypothesis = read_rttm(args.ref), read_rttm(args.hyp)
    score = score_diarization(reference, hypothesis, collar=args.collar, skip_overlap=args.skip_overlap)
    lines = [f"protocol: {score.protocol}",
             f"DER {100 * score.der:.2f}% (missed {100 * score.missed:.2f}%, false alarm {100 * score.false_alarm:.2f}%, "
             f"confusion {100 * score.confusion:.2f}%)  JER {100 * score.jer:.2f}%  speaker count right in "
             f"{sum(f.count_correct for f in score.files)} of {len(score.files)} files  "
             f"({score.total:.1f} s of reference speech scored)",
             f"{'file':24s} {'DER %':>7s} {'miss %':>7s} {'FA %':>7s} {'conf %':>7s} {'JER %':>7s}  speakers ref/hyp"]
    for f in score.files:
        total = f.total or 1.0
        lines.append(f"{f.file_id:24s} {100 * f.der:7.2f} {100 * f.missed / total:7.2f} "
                     f"{100 * f.false_alarm / total:7.2f} {100 * f.confusion / total:7.2f} {100 * f.jer:7.2f}  "
                     f"{f.reference_speakers}/{f.hypothesis_speakers}")
    emit(args, score.to_dict(), "\n".join(lines))
    return EXIT_OK


def _spot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", help="the recording to search")
    p.add_argument("--store", help="speaker store holding --speaker")
    p.add_argument("--speaker", help="the target: a speaker id of --store (or a name for --enroll)")
    p.add_argument("--enroll", nargs="+", help="enrollment recordings of the target, instead of --store")
    p.add_argument("--threshold", type=float,
                   help="score a voice must reach to be the target (default: the model's equal-error-rate threshold)")
    _count_options(p)
    model_options(p, from_store=True)
    json_option(p)


@verb("spot", "target-speaker detection: the segments where one enrolled speaker talks, with a score each "
      "(exit 3 when the speaker is not found)",
      "voxprint spot --store speakers.db --speaker alice meeting.wav --json", _spot_args)
def _spot(args: argparse.Namespace) -> int:
    from voxprint.diarization import spot

    if bool(args.store) == bool(args.enroll):
        raise VoxprintError("give the target as --store DB --speaker ID, or as --enroll FILE...")
    if args.store and not args.speaker:
        raise VoxprintError("--store needs --speaker ID")
    options = _pipeline_options(args)
    if args.store:
        from voxprint.cli.store import open_store

        store = open_store(args, loader=load_cli_model)  # the pipeline needs the whole model
        model, target, name = store.model, store.enrollment_embeddings(args.speaker), args.speaker
    else:
        model = load_cli_model(args)
        model.check_files({f: f for f in [*args.enroll, args.audio]}, "the command line")
        target, name = model.extract_embeddings(args.enroll), args.speaker or "target"
    with _blas_threads():
        result = spot(model, args.audio, target, name, threshold=args.threshold, **options)
    text = [f"{name}: {'found' if result.segments else 'not found'}, {result.seconds:.1f} s in {len(result.segments)} "
            f"segments (scores: {result.scale}; threshold {result.threshold:.2f})"]
    text += [f"  {s.start:8.2f} {s.end:8.2f}  {s.score:7.2f}" for s in result.segments]
    emit(args, {"audio": args.audio, **result.to_dict()}, "\n".join(text))
    return EXIT_OK if result.segments else EXIT_REJECT


def speaker_range(text: str) -> tuple[int, int]:
    """argparse type: ``N`` or ``A-B`` speakers per conversation.

    Example:
        >>> speaker_range("2-4"), speaker_range("3")
        ((2, 4), (3, 3))
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected N or A-B (e.g. 2-4), got {text!r}")
    low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"need 1 <= A <= B, got {text!r}")
    return low, high


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder of single-speaker utterances (wav.scp, utt2spk)")
    p.add_argument("--out", required=True, help="output folder: wav/ID.wav, rttm, wav.scp, reco2num_spk, "
                                                "simulation.json")
    p.add_argument("--num", type=positive_int, default=10, help="number of conversations (default: %(default)s)")
    p.add_argument("--speakers", type=speaker_range, default=(2, 4),
                   help="speakers per conversation, N or A-B drawn uniformly (default: 2-4)")
    p.add_argument("--overlap", choices=["none", "light", "heavy"], default="light",
                   help="how often a speaker change overlaps: never, 20 %% or 62.5 %% (the pyannote sample's "
                        "rate) (default: %(default)s)")
    p.add_argument("--utterances-per-speaker", type=positive_int, default=4,
                   help="turns per speaker (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--snr", type=float, metavar="DB",
                   help="add background noise (white to brown) at this speech-to-noise ratio in dB, e.g. 10")
    p.add_argument("--reverb", action="store_true",
                   help="give each speaker a simulated room impulse response (RT60 0.2-0.9 s)")
    p.add_argument("--rir-cache", default="exp/rir_bank_sim_16k.npz",
                   help="with --reverb: where the impulse-response bank is cached (default: %(default)s)")
    thread_option(p)
    json_option(p)


@verb("simulate-conversations", "build conversations with realistic turn-taking, pauses and overlaps from "
      "single-speaker utterances (WAV + RTTM + wav.scp), for evaluating diarization",
      "voxprint simulate-conversations --data data/dev --out sim/dev --num 30 --speakers 2-4 --overlap light "
      "[--snr 10 --reverb]",
      _simulate_args)
def _simulate(args: argparse.Namespace) -> int:
    from voxprint.diarization import simulate_conversations

    out = check_writable_folder(args.out, "--out")
    ids = simulate_conversations(args.data, out, num=args.num, speakers=args.speakers, overlap=args.overlap,
                                 seed=args.seed, utterances_per_speaker=args.utterances_per_speaker,
                                 snr_db=args.snr, reverb=args.reverb, rir_cache=args.rir_cache)
    emit(args, {"out": str(out), "conversations": len(ids), "rttm": str(out / "rttm"), "wav_scp": str(out / "wav.scp")},
         f"wrote {len(ids)} conversations to {out} (reference: {out / 'rttm'})")
    return EXIT_OK
