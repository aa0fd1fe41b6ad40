#!/usr/bin/env python3
"""Would identifying with two models help? The bundled ECAPA, the bundled i-vector and the sum of their LLRs.

    .venv/bin/python bench/identification_fusion.py [--splits 10]

An exploration for issue 11's accuracy targets, not a shipped system: the speaker store identifies with
one model. Each model embeds the speechocean762 dev utterances; the eval-id split
(:func:`voxprint.identification.evaluation.split_protocol`: 30 enrolled speakers with 3 utterances each,
30 unknown speakers) is drawn ``--splits`` times; each model scores every probe against every enrolled
speaker as the speaker store does (:func:`voxprint.identification.scoring.speaker_scoring`: the exact
3-utterance PLDA model, then the model's back-end calibration), and the fusion adds the two models'
log-likelihood ratios (equal weights, no fitting). Top-1 and DIR at FPIR 1 % come from
:func:`~voxprint.identification.evaluation.evaluate_galleries` (galleries of 10, 10 draws pooled, and
of all 30; the FPIR threshold is set on each split's unknown probes). No quality calibration is applied:
DIR and top-1 depend only on the ranking, which one monotone map per model does not change. Writes
docs/benchmarks.md, section "Identification: fusing the bundled models (exploration)".
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from common import mean_se  # bench/common.py: `python bench/identification_fusion.py` puts bench/ on the path

from voxprint.data import read_data_folder
from voxprint.identification.evaluation import evaluate_galleries, split_protocol
from voxprint.identification.scoring import backend_scorer
from voxprint.inference import load_model
from voxprint.paths import data_root
from voxprint.report import format_table, publish_benchmark

SECTION = "Identification: fusing the bundled models (exploration)"
MODELS = ("default", "ivector")


def probe_scores(embeddings: dict[str, np.ndarray], backend: object, split: object) -> tuple[np.ndarray, list[str]]:
    """(P, N) calibrated scores of the split's probes (known first) against its enrolled speakers, and their names."""
    names = sorted(split.enrolled)
    probes = split.known_probes + split.unknown_probes
    return backend_scorer(backend)([np.stack([embeddings[u] for u in split.enrolled[s]]) for s in names],
                                   np.stack([embeddings[u] for u in probes])), names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=10, help="random splits (seeds 0..N-1; default 10)")
    parser.add_argument("--doc", default=None, help="markdown file to update (default docs/benchmarks.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = read_data_folder(data_root() / "speechocean762" / "dev")
    with threadpool_limits(limits=1, user_api="blas"):
        loaded = {name: load_model(name) for name in MODELS}
        embedded = {}
        for name, model in loaded.items():
            result = model.embed_folder(folder.root, progress=True)
            embedded[name] = dict(zip(result.ids, result.embeddings))
        figures: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for seed in range(args.splits):
            split = split_protocol(folder.spk2utt, 3, 0.5, seed)
            scores = {}
            for name, model in loaded.items():
                scores[name], names = probe_scores(embedded[name], model.backend, split)
            scores["fusion"] = scores["default"] + scores["ivector"]
            probes = split.known_probes + split.unknown_probes
            known = np.arange(len(probes)) < len(split.known_probes)
            column = {s: i for i, s in enumerate(names)}
            truth = np.array([column.get(folder.utt2spk[u], -1) for u in probes])
            for name, llr in scores.items():
                for entry in evaluate_galleries(llr, known, truth, (10, None), (0.01,), 10, seed):
                    figures.setdefault((name, entry["gallery"]), []).append(
                        (entry["top1"], entry["open_set"][0]["dir"]))
    labels = {"default": "bundled ECAPA (`default`, PLDA)", "ivector": "bundled i-vector (`ivector`, PLDA)",
              "fusion": "sum of the two LLRs"}
    rows = []
    for (name, gallery), values in figures.items():
        cells = [mean_se([100 * v[i] for v in values]) for i in (0, 1)]
        rows.append([labels[name], gallery, *(f"{m:.1f} ± {e:.1f}" for m, e in cells)])
    rows.sort(key=lambda r: (r[1], list(labels.values()).index(r[0])))
    table = format_table(["system", "gallery", "top-1 % (mean ± s.e.)", "DIR @ FPIR 1 % (mean ± s.e.)"], rows)
    print(table)
    notes = [f"{args.splits} random eval-id splits of the 60 speechocean762 dev speakers (30 enrolled with 3 "
             "utterances, 30 unknown); each model scores as the speaker store does (exact 3-utterance PLDA model, "
             "the back-end's calibration); the fusion adds the two log-likelihood ratios. An exploration toward "
             "issue 11's targets (top-1 >= 97 %, DIR >= 85 % at gallery 30): the store identifies with one model. "
             "No quality calibration (one monotone map per model changes neither DIR nor top-1). The splits and "
             "galleries are those of the identification benchmark above (same seeds), so its top-1 equals the ECAPA "
             "row's; its DIR comes from cross-fitted quality-calibrated scores, two maps, and differs a little."]
    publish_benchmark(SECTION, ".venv/bin/python bench/identification_fusion.py", "One torch thread, one BLAS thread.",
                      notes, table, doc_path=args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
