#!/usr/bin/env python3
"""Identification benchmark: the bundled model vs Resemblyzer's embeddings in the eval-id protocol, same run.

    .venv/bin/python bench/identification.py [--model default] [--draws 4] [--seed 0] [--splits 10]
        [--results FILE] [--peer-results FILE]

Needs the benchmark venv for the peer (`make bench-env`); the peer takes about 25 minutes on 2 cores, so
``--results`` keeps the measurements and, beside them, the peer's embeddings (``FILE`` with ``.peer.npz``
for ``.json``, written as soon as the peer has embedded), and ``--peer-results`` reuses those embeddings
(from such a results file, or the ``.npz`` itself; they do not depend on voxprint's model) while voxprint
is measured again. One split of the speakers decides a lot at this size (one probe is 0.7 % of top-1 at
gallery 30, and the FPIR 1 % threshold rests on the 2-3 highest of 240 unknown probes), so both systems
are also evaluated on ``--splits`` random splits (seeds ``seed``, ``seed + 1``, ...; the embeddings and
calibration trials are made once, each split draws its own enrolled / unknown speakers, enrollment
utterances, galleries and calibration folds) and the document gives their mean and standard error next
to the figures of the first split. Writes docs/benchmarks.md, section
"Identification: speechocean762 dev" (``--model default``; another model, such as the bundled fusion
``fused``, gets a section of its own). The protocol is :mod:`voxprint.identification.evaluation`'s
(``voxprint eval-id``): the 60 dev speakers (unseen in training) are split at random into 30 enrolled
speakers (3 enrollment utterances each, their other 5 utterances probe) and 30 unknown speakers (all 8
utterances probe); galleries of 10 (10 random draws, pooled) and of all 30. Each enrolled speaker is
scored through the model the speaker store keeps for the back-end (the exact 3-utterance PLDA model for
the bundled model, :mod:`voxprint.identification.scoring`). Top-k and DIR rank the searches by the
back-end's own scores (one map for every search, as a deployment has; for the bundled models their
calibrated LLRs, fitted on training speakers only); the Cllr is that of the quality-measure calibration,
cross-fitted over two speaker folds (each probe's scores by the calibration fitted on the other fold),
and the DIR of those cross-fitted scores is shown too. Resemblyzer embeds the same utterances and the same calibration
segments (written as 16 kHz FLAC files) and is scored with cosine, its standard use, then calibrated
the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch
from common import mean_se, run_peer  # bench/common.py: `python bench/identification.py` puts bench/ on the path

from voxprint.data import read_data_folder
from voxprint.identification.calibration import CrossFittedCalibration, calibration_by_bin
from voxprint.identification.evaluation import IdentificationData, evaluate_identification, load_identification_data
from voxprint.identification.scoring import backend_scorer, cosine_scorer
from voxprint.identification.trials import QualityTrials, render_segment
from voxprint.inference import load_model
from voxprint.paths import data_root
from voxprint.report import format_table, publish_benchmark

SECTION = "Identification: speechocean762 dev"


def section(model_name: str) -> str:
    """The document's section for a model: the bundled default's, or one of its own for another model."""
    return SECTION if model_name == "default" else f"{SECTION}, model `{model_name}`"


def architecture(model) -> str:
    """The model's architecture, or its parts' for a fusion of models."""
    return " + ".join(p.config["model"]["name"] for p in getattr(model, "parts", [model]))
TOP1_TARGET, DIR_TARGET = 0.97, 0.85


def peer_file(results: Path | None) -> Path | None:
    """Where the peer's embeddings are kept beside a results file (``x.json`` -> ``x.peer.npz``)."""
    return None if results is None else results.with_name(results.stem + ".peer.npz")


def save_peer(path: Path, data: IdentificationData, version: str) -> None:
    """Keep the peer's embeddings (utterances and calibration segments), so later runs can re-split them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, utterance_ids=np.array(data.utterance_ids), embeddings=data.embeddings,
                 segment_names=np.array([seg.name for seg in data.plan.segments]),
                 segment_embeddings=data.segment_embeddings, resemblyzer_version=np.array(version))


def load_peer(path: Path, ours: IdentificationData) -> tuple[IdentificationData, str]:
    """The peer's embeddings kept by :func:`save_peer` (``path``: that ``.npz``, or a results file naming it),
    checked against our utterances and calibration segments."""
    if path.suffix != ".npz":
        results = json.loads(path.read_text())
        if "peer_embeddings" not in results:
            raise SystemExit(f"--peer-results {path} holds only the peer's final figures (an earlier version of this "
                             "benchmark), which cannot be split again; run without --peer-results to embed the peer")
        path = path.parent / results["peer_embeddings"]
    with np.load(path, allow_pickle=False) as kept:
        ids, names = [str(i) for i in kept["utterance_ids"]], [str(n) for n in kept["segment_names"]]
        if ids != list(ours.utterance_ids) or names != [seg.name for seg in ours.plan.segments]:
            raise SystemExit(f"{path} embeds other utterances or calibration segments than this run (another "
                             "--draws or --seed?); run without --peer-results to embed the peer again")
        data = IdentificationData(ours.utterance_ids, ours.speakers, kept["embeddings"], ours.seconds, ours.plan,
                                  kept["segment_embeddings"])
        return data, str(kept["resemblyzer_version"])


def split_figures(report: dict) -> dict:
    """The figures of one split that the document averages over splits."""
    out = {}
    for g in report["galleries"]:
        points = {p["fpir_target"]: p for p in g["open_set"]}
        crossfitted = {p["fpir_target"]: p for p in g["open_set_crossfitted"]}
        out[str(g["gallery"])] = {"top1": g["top1"], "top5": g["top5"], "dir_1": points[0.01]["dir"],
                                  "dir_01": points[0.001]["dir"], "threshold_1": points[0.01]["threshold"],
                                  "dir_1_crossfitted": crossfitted[0.01]["dir"], "cllr": g["cllr"]}
    out["pooled_threshold"] = report["gallery_fpir"]["rule_threshold"]
    return out


def evaluate_splits(data: IdentificationData, scorer, seeds: list[int], trials,
                    raw_is_llr: bool) -> tuple[dict, list[dict]]:
    """The eval-id protocol on several random splits of the same embeddings and calibration trials: the full
    report of the first split, and :func:`split_figures` of every split (the first included)."""
    first, figures = None, []
    for seed in seeds:
        report = evaluate_identification(data, scorer, seed=seed, raw_is_llr=raw_is_llr, trials=trials)
        first = report if first is None else first
        figures.append({"seed": seed, **split_figures(report)})
        print(f"split seed {seed}: " + ", ".join(f"gallery {g}: top-1 {pct(f['top1'])} %, DIR {pct(f['dir_1'])} %"
                                                  for g, f in figures[-1].items() if isinstance(f, dict)),
              file=sys.stderr)
    return first, figures


def peer_data(dev: Path, ours: IdentificationData, model, tmp: Path) -> tuple[IdentificationData, str]:
    """Resemblyzer's embeddings of the same utterances and calibration segments, and its version."""
    folder = read_data_folder(dev)
    waves = {u: model.load_waveform(folder.wav[u]) for u in ours.utterance_ids}
    segments = tmp / "segments"
    segments.mkdir()
    lines = []
    for seg in ours.plan.segments:
        path = segments / f"{seg.name}.flac"
        soundfile.write(path, render_segment(seg, waves, model.sample_rate), model.sample_rate)
        lines.append(f"{seg.name} {path.name}\n")
    (segments / "wav.scp").write_text("".join(lines))
    embedded = {}
    for name, where in (("utterances", dev), ("segments", segments)):
        out = run_peer("resemblyzer_embed.py", ["--data", where, "--out", tmp / f"{name}.npz", "--speed-seconds", "0"])
        peer = np.load(out, allow_pickle=False)
        embedded[name] = dict(zip((str(i) for i in peer["ids"]), peer["embeddings"]))
        version = str(peer["resemblyzer_version"])
    utterances = np.stack([embedded["utterances"][u] for u in ours.utterance_ids])
    segs = np.stack([embedded["segments"][s.name] for s in ours.plan.segments])
    return IdentificationData(ours.utterance_ids, ours.speakers, utterances, ours.seconds, ours.plan, segs), version


def form_summary(trials: QualityTrials, interactions: bool | None, seed: int) -> tuple[float, float, str]:
    """Cross-fitted Cllr of one calibration form (None: the back-end's scores as they are) and its worst
    per-bin calibration loss (and bin), on trials whose both speakers are in one fold."""
    from voxprint.backends.calibration import cllr

    fit = CrossFittedCalibration.fit(trials.scores, trials.labels, trials.test_seconds, trials.enroll_counts,
                                     trials.test_speakers, trials.model_speakers, seed=seed,
                                     interactions=bool(interactions))
    llr = trials.scores if interactions is None else fit.transform(trials.scores, trials.test_seconds,
                                                                     trials.enroll_counts, trials.test_speakers)
    keep = np.array([fit.folds[a] == fit.folds[b] for a, b in
                     zip(trials.test_speakers.tolist(), trials.model_speakers.tolist())])
    rows = [r for names in (trials.duration_bins, trials.count_bins())
            for r in calibration_by_bin(llr[keep], trials.labels[keep], names[keep])]
    worst = max(rows, key=lambda r: r.loss)
    return cllr(llr[keep], trials.labels[keep]), worst.loss, worst.bin


def pct(x: float, decimals: int = 1) -> str:
    return f"{100 * x:.{decimals}f}"


def measure(model_name: str, draws: int, seed: int, splits: int, peer_from: Path | None,
            keep_peer: Path | None) -> dict:
    """Run both systems through the protocol on ``splits`` splits (the peer's embeddings read from
    ``peer_from`` when given, else made and written to ``keep_peer`` at once); everything the document shows,
    as JSON-ready data."""
    dev = data_root() / "speechocean762" / "dev"
    model = load_model(model_name)
    data = load_identification_data(model, dev, draws=draws, seed=seed, progress=True)
    if peer_from is not None:
        peer, version = load_peer(peer_from, data)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            peer, version = peer_data(dev, data, model, Path(tmp))
        if keep_peer is not None:
            save_peer(keep_peer, peer, version)
    seeds = list(range(seed, seed + splits))
    scorer = backend_scorer(model.backend)
    trials = data.quality_trials(scorer, seed=seed)
    ours, ours_splits = evaluate_splits(data, scorer, seeds, trials, model.backend.calibration is not None)
    theirs, theirs_splits = evaluate_splits(peer, cosine_scorer, seeds, peer.quality_trials(cosine_scorer, seed=seed),
                                            False)
    forms = {"as_is": form_summary(trials, None, seed), "offset_only": form_summary(trials, False, seed),
             "interactions": form_summary(trials, True, seed)}
    return {"system": f"voxprint `{model_name}` ({architecture(model)}, {model.backend.name})",
            "peer": f"Resemblyzer {version} (cosine)", "model": model_name,
            "ours": {"backend": model.backend.name, **ours}, "theirs": theirs, "forms": forms,
            "splits": {"seeds": seeds, "ours": ours_splits, "theirs": theirs_splits},
            "peer_embeddings": None if keep_peer is None else keep_peer.name}


def shipped_threshold(model_name: str) -> float | None:
    """The identification threshold in the model's ``meta.json`` now (read when the document is written)."""
    from voxprint.runs import resolve_model_dir

    meta = json.loads((resolve_model_dir(model_name) / "meta.json").read_text())
    return meta.get("identification", {}).get("threshold")


def split_table(results: dict) -> str:
    """Mean ± standard error over the splits, the first split's figure and the range, per system and gallery."""
    splits = results["splits"]
    first = splits["seeds"][0]
    rows = []
    for name, key in ((results["system"], "ours"), (results["peer"], "theirs")):
        figures = splits[key]
        for gallery in (g for g, f in figures[0].items() if isinstance(f, dict)):
            row = [name, gallery]
            for metric in ("top1", "dir_1", "dir_01", "dir_1_crossfitted"):
                values = [f[gallery][metric] for f in figures]
                mean, se = mean_se(values)
                row += [f"{pct(mean)} ± {pct(se)}", pct(values[0]), f"{pct(min(values))}-{pct(max(values))}"]
            values = [f[gallery]["threshold_1"] for f in figures]
            mean, se = mean_se(values)
            row += [f"{mean:.2f} ± {se:.2f}", f"{values[0]:.2f}", f"{min(values):.2f}-{max(values):.2f}"]
            rows.append(row)
    header = ["system", "gallery"]
    for metric in ("top-1 %", "DIR @ FPIR 1 %", "DIR @ FPIR 0.1 %", "DIR @ FPIR 1 %, cross-fitted scores",
                   "threshold for FPIR 1 %"):
        header += [f"{metric}: mean ± s.e.", f"seed {first}", "range"]
    return format_table(header, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model to evaluate (default: %(default)s)")
    parser.add_argument("--draws", type=int, default=4, help="calibration orderings per speaker (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the protocol (default: 0)")
    parser.add_argument("--splits", type=int, default=10,
                        help="random splits of the speakers to average over, seeds --seed, --seed + 1, ... "
                             "(default: %(default)s)")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON file of the measurements: written after measuring (the peer's embeddings beside "
                             "it, as FILE.peer.npz); with --reuse, read instead of measuring")
    parser.add_argument("--reuse", action="store_true", help="re-render the document from --results")
    parser.add_argument("--peer-results", type=Path, default=None,
                        help="an earlier --results file (or its .peer.npz): reuse the peer's embeddings instead of "
                             "embedding again (the peer alone takes about 25 minutes on 2 cores)")
    parser.add_argument("--doc", default=None, help="markdown file to update (default docs/benchmarks.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.splits < 1:
        parser.error("--splits must be at least 1")
    if args.reuse:
        if args.results is None or not args.results.is_file():
            parser.error("--reuse needs an existing --results file")
        results = json.loads(args.results.read_text())
        if "splits" not in results:
            parser.error(f"{args.results} was written by an earlier version of this benchmark (no splits); "
                         "measure again")
    else:
        if args.peer_results is not None and not args.peer_results.is_file():
            parser.error(f"--peer-results {args.peer_results} not found")
        keep = peer_file(args.results) if args.peer_results is None else None
        results = measure(args.model, args.draws, args.seed, args.splits, args.peer_results, keep)
        if args.peer_results is not None and args.results is not None:
            # The peer's embeddings stay where they were; name them (relative to this results file when possible).
            source = args.peer_results if args.peer_results.suffix == ".npz" else \
                args.peer_results.parent / json.loads(args.peer_results.read_text())["peer_embeddings"]
            results["peer_embeddings"] = os.path.relpath(source.resolve(), args.results.resolve().parent)
        if args.results is not None:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=1))
    ours, theirs = results["ours"], results["theirs"]

    # ---- main table: both systems, both gallery sizes, ratios
    def cells(g: dict) -> list[str]:
        points = {p["fpir_target"]: p for p in g["open_set"]}
        return [pct(g["top1"]), pct(g["top5"]), pct(points[0.01]["dir"]),
                pct(points[0.001]["dir"]) + ("" if points[0.001]["resolved"] else " *"), f"{g['cllr']:.3f}",
                f"{g['cllr_uncalibrated']:.3f}" if "cllr_uncalibrated" in g else ""]

    rows = []
    for name, report in ((results["system"], ours), (results["peer"], theirs)):
        rows += [[name, g["gallery"], *cells(g)] for g in report["galleries"]]
    for a, b in zip(ours["galleries"], theirs["galleries"]):
        pa, pb = ({p["fpir_target"]: p["dir"] for p in g["open_set"]} for g in (a, b))
        rows.append(["ratio voxprint / Resemblyzer", a["gallery"], f"{a['top1'] / b['top1']:.2f}",
                     f"{a['top5'] / b['top5']:.2f}", f"{pa[0.01] / pb[0.01]:.2f}",
                     f"{pa[0.001] / pb[0.001]:.2f}" if pb[0.001] else "", f"{a['cllr'] / b['cllr']:.2f}", ""])
    main_table = format_table(["system", "gallery", "top-1 %", "top-5 %", "DIR @ FPIR 1 %", "DIR @ FPIR 0.1 %",
                               "Cllr", "Cllr, back-end as is"], rows)

    everyone = ours["galleries"][-1]
    seeds = results["splits"]["seeds"]
    over = [f[str(everyone["gallery"])] for f in results["splits"]["ours"]]
    (top1_all, top1_se), (dir_all, dir_se) = mean_se([f["top1"] for f in over]), mean_se([f["dir_1"] for f in over])
    verdict = (f"Targets (gallery of all {everyone['gallery']}, mean ± s.e. over {len(seeds)} splits; split seed "
               f"{seeds[0]} in brackets): closed-set top-1 >= 97 %: {pct(top1_all)} ± {pct(top1_se)} % "
               f"({pct(over[0]['top1'])} %), {'met' if top1_all >= TOP1_TARGET else 'not met'}; open-set DIR @ FPIR "
               f"1 % >= 85 %: {pct(dir_all)} ± {pct(dir_se)} % ({pct(over[0]['dir_1'])} %), "
               f"{'met' if dir_all >= DIR_TARGET else 'not met'}.")
    pooled = [f["pooled_threshold"] for f in results["splits"]["ours"]]

    # ---- calibration per bin (voxprint)
    cal = ours["calibration"]
    bin_rows = []
    for b in cal["bins"]:
        before = b.get("before")

        def pair(row: dict | None, rate: str) -> str:
            return f"{pct(row[rate], 2)} / {pct(row[rate + '_expected'], 2)}" if row else ""

        bin_rows.append([b["bin"], b["trials"], b["targets"],
                         f"{before['cllr']:.3f}" if before else "", f"{b['cllr']:.3f}", f"{b['min_cllr']:.3f}",
                         f"{b['cllr'] - b['min_cllr']:.3f}", pair(before, "far"), pair(b, "far"),
                         pair(before, "miss"), pair(b, "miss"),
                         f"{before['llr_at_far']:.2f}" if before else "", f"{b['llr_at_far']:.2f}"])
    bin_table = format_table(["test / enrollment", "trials", "targets", "Cllr, as is", "Cllr, calibrated", "min Cllr",
                              "calibration loss", "FAR %: measured / predicted, as is", "FAR %, calibrated",
                              "miss %: measured / predicted, as is", "miss %, calibrated", "LLR at FAR 1 %, as is",
                              "LLR at FAR 1 %, calibrated"], bin_rows)
    names = {"as_is": "back-end as is (calibrated on the 125 training speakers)",
             "offset_only": "offset only: a s + b + c log T + d log K",
             "interactions": "with interactions: + e s log T + f s log K (shipped)"}
    form_table = format_table(["calibration", "Cllr", "worst calibration loss", "in bin"],
                              [[names[k], f"{c:.3f}", f"{loss:.3f}", where]
                               for k, (c, loss, where) in results["forms"].items()])

    # ---- gallery size
    gf = ours["gallery_fpir"]
    size_table = format_table(
        ["gallery N", "non-mated searches", "FPIR %, fixed threshold on the best score",
         "FPIR %, best - ln N >= threshold", f"FPIR %, best - ln N >= ln {1 / gf['target_fpir']:g} (not fitted)"],
        [[r["gallery"], r["nonmated"], f"{100 * r['fpir_fixed']:.2f}", f"{100 * r['fpir_rule']:.2f}",
          f"{100 * r['fpir_bound_rule']:.2f}"] for r in gf["sizes"]])

    shipped = shipped_threshold(results["model"])
    tables = "\n".join([
        f"**{len(seeds)} random splits** (seeds {seeds[0]}-{seeds[-1]}; the same embeddings and calibration trials, "
        "each split drawing its enrolled and unknown speakers, enrollment utterances, galleries and calibration "
        "folds): mean ± standard error of the mean over the splits, the first split's figure and the range. "
        "\"Threshold for FPIR 1 %\" is the threshold on best - ln N (of the back-end's scores) that each split's "
        "unknown probes give. \"Cross-fitted scores\": the DIR when each probe is ranked by its fold's "
        "cross-fitted calibration instead (see the notes above: two maps, one per half of the probes).",
        "",
        split_table(results),
        f"**Split seed {seeds[0]}** (every figure below is from this one split):",
        "",
        main_table,
        f"\\* FPIR 0.1 % with {everyone['nonmated']} unknown probes allows no false positive: the threshold is above "
        "every unknown probe's statistic. \"Back-end as is\": the Cllr of the model's back-end scores before the "
        "quality calibration (their own calibration was fitted on the 125 training speakers).",
        "",
        verdict,
        "",
        "**Calibration across test durations and enrollment counts** (voxprint, "
        f"{cal['trials']:,} calibration trials of dev speakers, {cal['targets']:,} targets; figures on the trials "
        "whose test and enrollment speakers are both in the fold their calibration did not see). \"As is\" is the "
        "back-end's own calibration, fitted on the 125 training speakers. Rates at the log-likelihood-ratio "
        "threshold ln 100 (odds 100:1); \"predicted\" is what the LLRs claim: the target mean of exp(-LLR) above "
        "the threshold (FAR) and the non-target mean of exp(LLR) below it (miss), equal to the measured rates only "
        "for calibrated scores (the predicted miss rests on the few non-targets just below the threshold, so it "
        "is noisy). Cllr differs between bins because discrimination does (a 2 s test is harder than a 10 s "
        "one); what calibration controls is the calibration loss, Cllr - min Cllr. For the same reason the LLR "
        "that 1 % of non-targets reach is not the same in every bin even for perfectly calibrated scores: it "
        "falls as a bin separates speakers better (its non-targets get lower LLRs, and fewer of them reach any "
        "threshold), so a fixed LLR threshold gives a different FAR per bin, each at most exp(-threshold).",
        "",
        bin_table,
        "Calibration forms, cross-fitted (Cllr over the calibration trials above; worst calibration loss over "
        "their bins); the interaction terms let the slope depend on the test length and enrollment count:",
        "",
        form_table,
        f"**Gallery size** (voxprint, calibrated): unknown speakers rotate over {gf['folds']} folds of 10, the other "
        f"50 are enrolled (3 utterances each); galleries of 10 and 30 drawn 10 times per fold. Both thresholds are "
        f"set for FPIR {100 * gf['target_fpir']:g} % at gallery {gf['reference_gallery']} (fixed: "
        f"{gf['fixed_threshold']:.2f} on the best score; rule: {gf['rule_threshold']:.2f} on best - ln N). The "
        "unfitted threshold ln(1 / FPIR) is a bound for calibrated LLRs (no non-target exceeds t more often than "
        "exp(-t), so the best of N exceeds t + ln N at most N exp(-t - ln N) = exp(-t) of the time): safe at every "
        "N, but it gives up detections. Over the "
        f"{len(pooled)} splits this pooled threshold (set on {gf['sizes'][0]['nonmated']} non-mated searches) is "
        f"{mean_se(pooled)[0]:.2f} ± {mean_se(pooled)[1]:.2f} (range {min(pooled):.2f}-{max(pooled):.2f}).",
        "",
        size_table,
    ])
    notes = [
        "The eval-id protocol (`voxprint eval-id --data .../speechocean762/dev --json` gives the voxprint rows): "
        f"{ours['speakers']} dev speakers unseen in training, {ours['enrolled']} enrolled with "
        f"{ours['enroll_utts']} utterances each (their other {ours['known_probes']} utterances are known probes), "
        f"{ours['unknown']} held out as unknown ({ours['unknown_probes']} unknown probes); gallery 10 pools 10 "
        "random galleries. Each enrolled speaker is scored through the speaker model the speaker store keeps for "
        "the back-end: for PLDA the exact n-utterance model of its enrollment utterances (their number and mean "
        "in the PLDA space, so more enrollments sharpen it), for cosine their centroid. Open-set statistic: "
        "best score - ln N (what the speaker store's decision compares with "
        "its threshold); DIR counts a known probe when its best speaker is right and clears the threshold set for "
        "the FPIR on the unknown probes.",
        "",
        "Which scores rank the searches: top-k and DIR use the back-end's own scores (for the bundled models "
        "their log-likelihood ratios, calibrated on the 125 training speakers, so nothing in the ranking was "
        "fitted on a dev speaker). A deployment applies one map to every search, and at a given FPIR the DIR "
        "depends only on how that map orders the searches. The cross-fitted calibration below gives the probes "
        "of each speaker fold a different map (each fitted on the other half of the speakers); ranked by those "
        "scores, half of the searches are shifted against the other half, which costs DIR that no deployment "
        "loses (the \"cross-fitted scores\" column; an earlier version of this benchmark reported that figure). "
        "The Cllr and the calibration tables measure the cross-fitted calibrated scores.",
        "",
        "Calibrated scores are log-likelihood ratios from the quality-measure calibration (llr = a s + b + c log T "
        "+ d log K + e s log T + f s log K; T the test seconds, K the enrollment count) fitted on calibration "
        "trials that "
        "concatenate utterances of one speaker to 2, 5, 10 and 20 s tests (and whole utterances) and pool 1, 2, 3, "
        "5 or 7 enrollment utterances (dev speakers have 8, so 7 is the most an enrollment can pool next to a "
        "disjoint test; larger counts are treated as 7). The calibrated figures are cross-fitted over two speaker "
        "folds: each "
        "probe is calibrated by the calibration fitted on the other fold (its gallery speakers may be in that fold; "
        "the probe's own speaker never is). The calibration shipped with the bundled model (`meta.json`, "
        "`identification`, written by `recipes/default/fit_identification.py`) is fitted on all 60 dev speakers, "
        "so these dev figures are the honest estimate for new speakers, not a measurement of the shipped map; "
        "its threshold is the cross-fitted one for FPIR 1 % of the gallery-size folds (rule threshold below, seed "
        f"{seeds[0]}: {gf['rule_threshold']:.3f}; set on {gf['sizes'][0]['nonmated']} non-mated searches, not on the "
        f"{everyone['nonmated']} unknown probes of one split, whose threshold swings with the split as the table "
        "shows)" + (f"; shipped: {shipped:.3f}." if shipped is not None else "."),
        "",
        "Resemblyzer embeds the same utterances and the same calibration segments (its preprocess_wav and "
        "embed_utterance, in `.venv-bench`), is scored with cosine (which ranks its searches) and calibrated the "
        "same way; higher ratios are better except for Cllr.",
    ]
    command = f".venv/bin/python bench/identification.py --model {results['model']}"
    publish_benchmark(section(results["model"]), command, "One torch thread.", notes, tables, doc_path=args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
