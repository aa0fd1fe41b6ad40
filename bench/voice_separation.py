#!/usr/bin/env python3
"""How far apart two voices are to each embedder: the pyannote sample's two speakers against pairs of
unseen speechocean762 dev speakers.

    .venv/bin/python bench/voice_separation.py [--pairs 12] [--utterances 3]

Diarization can only split what the embedder tells apart. Windows of 1.5 s every 0.75 s (the diarization
defaults) are cut inside single-speaker stretches: the pyannote sample's reference turns with the
overlaps cut out, and for comparison ``--pairs`` random pairs of dev speakers (``--utterances`` utterances
each, speakers unseen in training), also passed through a telephone band
(:func:`voxprint.data.signal.band_limit` at 8 kHz), because the sample is telephone-band speech (its
energy above 4 kHz is measured below). Every window is embedded on its own by each bundled model
(``extract_embedding``) and by the peer, Resemblyzer (``embed_utterance`` of each window, in
``.venv-bench``). Per speaker pair: the mean cosine of two windows of one speaker ("within"), of the two
speakers ("between"), their gap, and how many windows a two-cluster clustering (average linkage on
cosine distances, as ``--method ahc`` with the count given) assigns to the right speaker, under the
better of the two ways to name its clusters. The dev rows average over the pairs.

Writes docs/benchmarks.md, section "Diarization: how far apart the voices are".
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch
from common import run_peer  # bench/common.py: `python bench/voice_separation.py` puts bench/ on the path

SECTION = "Diarization: how far apart the voices are"
WINDOW_SECONDS, HOP_SECONDS, RATE = 1.5, 0.75, 16000
SYSTEMS = ("default", "ivector", "fused")


def windows(wave: np.ndarray, start: float = 0.0, end: float | None = None) -> list[np.ndarray]:
    """The 1.5 s windows, every 0.75 s, of ``wave`` between ``start`` and ``end`` seconds.

    Example:
        >>> [len(w) for w in windows(np.zeros(3 * RATE, dtype=np.float32))]
        [24000, 24000, 24000]
    """
    end = len(wave) / RATE if end is None else end
    size, hop = int(WINDOW_SECONDS * RATE), int(HOP_SECONDS * RATE)
    first, last = int(start * RATE), int(end * RATE)
    return [wave[i:i + size] for i in range(first, last - size + 1, hop)]


def single_speaker_stretches(segments: list) -> list[tuple[float, float, str]]:
    """Each reference segment minus the time any other speaker's segment covers.

    Example:
        >>> from voxprint.diarization.segments import Segment
        >>> single_speaker_stretches([Segment(0.0, 4.0, "a"), Segment(3.0, 6.0, "b")])
        [(0.0, 3.0, 'a'), (4.0, 6.0, 'b')]
    """
    stretches = []
    for segment in segments:
        pieces = [(segment.start, segment.end)]
        for other in segments:
            if other.speaker == segment.speaker:
                continue
            pieces = [part for a, b in pieces
                      for part in ((a, min(b, other.start)), (max(a, other.end), b)) if part[1] > part[0]]
        stretches += [(a, b, segment.speaker) for a, b in pieces]
    return sorted(stretches)


def separation(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Within- and between-speaker mean cosines of two speakers' windows, and the two-cluster accuracy.

    Example:
        >>> e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> r = separation(e, np.array([0, 0, 1, 1]))
        >>> round(r["within"], 3), round(r["between"], 3), r["accuracy"]
        (0.994, 0.11, 1.0)
        >>> round(r["separability"], 1)
        16.1
    """
    from sklearn.cluster import AgglomerativeClustering

    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit @ unit.T
    same = labels[:, None] == labels[None, :]
    pairs = ~np.eye(len(labels), dtype=bool)
    clusters = AgglomerativeClustering(n_clusters=2, metric="cosine", linkage="average").fit_predict(unit)
    agreement = float(np.mean(clusters == labels))
    within, between = cosine[same & pairs], cosine[~same]
    spread = np.sqrt((within.var() + between.var()) / 2)
    return {"within": float(within.mean()), "between": float(between.mean()),
            "separability": float((within.mean() - between.mean()) / spread), "accuracy": max(agreement, 1.0 - agreement)}


def band_energy_db(wave: np.ndarray, low: float) -> float:
    """Energy above ``low`` Hz relative to the whole, in dB."""
    from scipy.signal import welch

    freqs, power = welch(wave, fs=RATE, nperseg=1024)
    return float(10 * np.log10(max(power[freqs >= low].sum(), 1e-30) / power.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=12, help="random pairs of dev speakers")
    parser.add_argument("--utterances", type=int, default=3, help="utterances per dev speaker")
    parser.add_argument("--dry-run", action="store_true", help="print the table, do not write docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import voxprint
    from voxprint.audio import load_audio
    from voxprint.data import read_data_folder
    from voxprint.data.signal import band_limit
    from voxprint.diarization.segments import read_rttm
    from voxprint.paths import data_root
    from voxprint.report import format_table, publish_benchmark

    # Sets of windows: name -> list of (windows, labels) per speaker pair.
    sample_dir = data_root() / "pyannote-sample"
    sample = load_audio(sample_dir / "sample.wav", target_rate=RATE)
    reference = next(iter(read_rttm(sample_dir / "sample.rttm").values()))
    cut, labels = [], []
    speakers = sorted({segment.speaker for segment in reference})
    for start, end, speaker in single_speaker_stretches(reference):
        pieces = windows(sample, start, end)
        cut += pieces
        labels += [speakers.index(speaker)] * len(pieces)
    sets: dict[str, list[tuple[list[np.ndarray], np.ndarray]]] = {
        "pyannote sample (real conversation, telephone band)": [(cut, np.array(labels))]}

    dev = read_data_folder(data_root() / "speechocean762" / "dev")
    rng = np.random.default_rng(0)
    wide, narrow = [], []
    dev_waves = []
    for _ in range(args.pairs):
        pair = rng.choice(len(dev.speakers), 2, replace=False)
        cut, labels = [], []
        for label, index in enumerate(pair):
            for utterance in dev.spk2utt[dev.speakers[index]][:args.utterances]:
                wave = load_audio(dev.wav[utterance], target_rate=RATE)
                dev_waves.append(wave)
                pieces = windows(wave)
                cut += pieces
                labels += [label] * len(pieces)
        wide.append((cut, np.array(labels)))
        narrow.append(([band_limit(w, RATE, 8000) for w in cut], np.array(labels)))
    sets["speechocean762 dev speaker pairs"] = wide
    sets["the same dev windows through a telephone band (8 kHz)"] = narrow

    embeddings: dict[str, dict[str, list[np.ndarray]]] = {}
    for system in SYSTEMS:
        model = voxprint.load_model(system)
        embeddings[system] = {name: [np.stack([model.extract_embedding(w, sample_rate=RATE) for w in cut])
                                     for cut, _ in pairs] for name, pairs in sets.items()}
        print(system, "embedded", flush=True)

    with tempfile.TemporaryDirectory(prefix="voxprint-voices-") as scratch:
        folder = Path(scratch)
        ids = []
        with open(folder / "wav.scp", "w") as scp:
            for name, pairs in sets.items():
                for p, (cut, _) in enumerate(pairs):
                    for i, wave in enumerate(cut):
                        key = f"s{list(sets).index(name)}-p{p:02d}-w{i:03d}"
                        soundfile.write(folder / f"{key}.wav", wave, RATE)
                        scp.write(f"{key} {key}.wav\n")
                        ids.append((name, p, i, key))
        stored = np.load(run_peer("resemblyzer_embed.py", ["--data", folder, "--out", folder / "peer.npz",
                                                            "--speed-seconds", 1]))
        row_of = {key: row for row, key in enumerate(stored["ids"].tolist())}
        peer = stored["embeddings"]
        peer_name = f"Resemblyzer {stored['resemblyzer_version']} (peer)"
        embeddings[peer_name] = {name: [np.stack([peer[row_of[key]] for n, q, _, key in ids if n == name and q == p])
                                        for p in range(len(pairs))] for name, pairs in sets.items()}

    rows = []
    for system, by_set in embeddings.items():
        label = system if system.startswith("Resemblyzer") else f"voxprint `{system}`"
        for name, pairs in sets.items():
            results = [separation(e, labels) for e, (_, labels) in zip(by_set[name], pairs)]
            mean = {key: float(np.mean([r[key] for r in results])) for key in results[0]}
            rows.append([label, name, str(len(pairs)), str(sum(len(labels) for _, labels in pairs)),
                         f"{mean['within']:.3f}", f"{mean['between']:.3f}", f"{mean['within'] - mean['between']:+.3f}", f"{mean['separability']:.2f}",
                         f"{100 * mean['accuracy']:.0f} %"])
            print(rows[-1], flush=True)
    table = format_table(["system", "windows of", "speaker pairs", "windows", "within (cosine)", "between (cosine)",
                          "gap", "separability", "two-cluster accuracy"], rows)
    sample_high = band_energy_db(sample, 4000.0)
    dev_high = float(np.median([band_energy_db(w, 4000.0) for w in dev_waves]))
    notes = [
        f"{args.pairs} random pairs of dev speakers (seed 0), {args.utterances} utterances each; windows of "
        f"{WINDOW_SECONDS} s every {HOP_SECONDS} s inside one speaker's speech (for the sample: the reference",
        "turns with the overlaps cut out). Within: mean cosine of two windows of one speaker; between: of a window",
        "of each; gap: within - between (what clustering has to work with); two-cluster accuracy: windows that",
        "average-linkage clustering into two clusters puts with their own speaker (50 % is chance for two equal",
        "speakers). The dev rows average over the pairs.",
        "",
        f"Energy above 4 kHz: {sample_high:.0f} dB of the whole in the pyannote sample (telephone-band speech), "
        f"{dev_high:.0f} dB in the median dev recording.",
        "",
        "Separability: the gap over the pooled standard deviation of the two sets of cosines (how many spreads",
        "apart the two voices' windows are; a measure that does not depend on each embedder's cosine scale).",
        "",
        "What it shows (written from the table): on unseen dev speakers the bundled models keep the two voices of",
        "a pair several spreads apart, at least as far as Resemblyzer does, and a telephone band costs them part of",
        "that, not all of it. On the pyannote sample the bundled models' separability falls to a fraction of it,",
        "while Resemblyzer's stays near its dev figure: the sample's two voices, adult English conversation, lie",
        "where 125 speechocean762 speakers taught the models little, and the telephone band alone does not",
        "explain it. This, not the clustering, bounds voxprint's diarization of the sample: in \"Diarization\"",
        "above, the same clusterer (`spectralcluster`) that reaches the peer's sample DER on Resemblyzer's",
        "windows does not on voxprint's.",
    ]
    if args.dry_run:
        print(table)
        return
    publish_benchmark(SECTION, ".venv/bin/python bench/voice_separation.py",
                      "One torch thread; each window embedded on its own.", notes, table)


if __name__ == "__main__":
    main()
