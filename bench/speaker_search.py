#!/usr/bin/env python3
"""Speaker search at scale: exact BLAS search against FAISS, 10^3 to 10^6 enrolled speakers, one thread,
on the rows the speaker store searches for each kind of back-end.

    .venv/bin/python bench/speaker_search.py [--rows cosine default fused] [--sizes 1000 10000 100000 1000000]
        [--queries 200]

Synthetic speaker embeddings shaped like the bundled models' (unit vectors): groups of 100 speakers
around random centres (cosine about 0.5 between speakers of a group, about 0 across groups), and test
embeddings near a random speaker (cosine about 0.84 to its model, about 0.55 to the best other one: on
speechocean762 dev the bundled model gives 0.82 and 0.58). A fused model's embedding is its parts' unit
embeddings joined (:func:`voxprint.backends.fused.join_parts`), each part made that way (the same groups
and test speakers). The rows searched (``--rows``):

- ``cosine``: the unit models themselves (D = 192), by cosine: a cosine back-end's centroids;
- ``default``, ``fused``: the built-in model's back-end (:func:`voxprint.identification.scoring.speaker_scoring`):
  each speaker enrolled with one synthetic embedding (``scoring.models``), indexed by
  ``scoring.search_vectors(models, counts)`` and queried by ``scoring.query_vectors(tests)``, by inner
  product, as :meth:`voxprint.store.speakers.SpeakerStore.identify_embedding` searches.

For each kind of rows, gallery size and index kind (:class:`voxprint.store.index.SpeakerIndex`): build
time, enroll rate (1,000 single-speaker ``add`` calls on the built index), per-query top-5 latency (one
query at a time, p50/p99), resident memory added by the index, and recall@5 against exact search on the
same rows. Then the crossover for each kind of rows: the smallest gallery at which one exact query takes
1 ms or more and FAISS answers it at least twice as fast; on the cosine rows it is ``EXACT_MAX_SPEAKERS``
in voxprint/store/index.py. Everything runs on one thread (OMP_NUM_THREADS=1, threadpoolctl for BLAS,
``faiss.omp_set_num_threads(1)``, ``torch.set_num_threads(1)``). Writes docs/benchmarks.md, section
"Speaker search at scale".
"""
from __future__ import annotations

import os
import sys

if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
    # glibc reads this at start-up only: blocks over 64 KiB are mapped, not taken from a heap that
    # earlier, freed arrays left behind, so the RSS growth of a build is the index's own memory (with
    # release_free_memory() for the free space that small blocks leave inside the heap).
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy and FAISS start their thread pools

import argparse  # noqa: E402
import ctypes  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from voxprint.backends.fused import join_parts  # noqa: E402
from voxprint.report import format_table, publish_benchmark  # noqa: E402
from voxprint.store import index as index_module  # noqa: E402
from voxprint.store.index import EXACT_MAX_SPEAKERS, SpeakerIndex  # noqa: E402

# CPU time of this process, not wall time: the machine is shared, and time spent waiting for a core
# that another job holds is not the code's (everything here runs on this one thread).
clock = time.process_time
SECTION = "Speaker search at scale"
DIM = 192  # the bundled model's embedding size: the cosine rows
ROW_KINDS = ("cosine", "default", "fused")  # plain cosine rows, then the store's rows of built-in models
GROUP = 100  # speakers per group of similar voices
SPEAKER_SPREAD = 1.0  # noise norm around a group centre: cosine 1 / (1 + 1.0**2) = 0.5 within a group
QUERY_SPREAD = 0.65  # noise norm around a speaker model: cosine about 0.84 to it
TOP = 5
ADDS = 1000
CROSSOVER_SIZES = (1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)
# Below this, one exact query is not what identification waits for (embedding a recording and the
# back-end rescoring of 50 candidates take longer), and exact search has recall 1 and no build.
EXACT_BUDGET_MS = 1.0
# The target: a top-5 query among 10^6 speakers in at most 10 ms, on one thread.
TARGET_SPEAKERS = 1_000_000
TARGET_MS = 10.0
# Speakers generated and turned into rows at a time: float64 intermediates of 10^6 rows take gigabytes.
BLOCK = 100_000
LOADS: list[float] = []  # the 1-minute load average at each measurement (the machine is shared)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class Rows:
    """What the speaker store searches for one kind of back-end: speaker rows and query rows, and the metric.

    Attributes:
        name: ``"cosine"``, or the built-in model whose back-end makes the rows.
        dims: the sizes of the embedding's parts (one part, except for a fusion of models).
        metric: the :class:`SpeakerIndex` metric.
        scoring: the back-end's :class:`~voxprint.identification.scoring.SpeakerScoring`; None for the unit
            models themselves (cosine).
    """

    name: str
    dims: tuple[int, ...]
    metric: str
    scoring: Any = None

    @functools.cached_property
    def width(self) -> int:
        """Values per row (a first query also makes the back-end's cached search coordinates)."""
        return self.query_rows(join_parts([_unit(np.ones((1, d))) for d in self.dims]))[0].shape[1]

    def speaker_rows(self, embeddings: np.ndarray) -> tuple[np.ndarray, float]:
        """Index rows of speakers enrolled with one embedding each (a row of ``embeddings``).

        Returns:
            ``(N, width)`` float32 rows, and the CPU seconds of ``search_vectors`` (what the store pays on
            each rebuild of its index from the models it keeps; ``scoring.models`` is not counted).
        """
        if self.scoring is None:
            return embeddings, 0.0
        rows, seconds = np.empty((len(embeddings), self.width), dtype=np.float32), 0.0
        for lo in range(0, len(embeddings), BLOCK):
            # A 2-D array is one single-utterance speaker per row (enrollment_groups).
            models, counts = self.scoring.models(embeddings[lo:lo + BLOCK])
            start = clock()
            block = self.scoring.search_vectors(models, counts)
            seconds += clock() - start
            rows[lo:lo + len(block)] = block
        return rows, seconds

    def query_rows(self, tests: np.ndarray) -> tuple[np.ndarray, float]:
        """``(Q, width)`` float32 query rows, made one test at a time as identification does, and the mean
        CPU seconds per test (0 for cosine: the index normalises the embedding itself)."""
        if self.scoring is None:
            return tests, 0.0
        start = clock()
        rows = [self.scoring.query_vectors(test[None]) for test in tests]
        seconds = (clock() - start) / len(tests)
        return np.concatenate(rows).astype(np.float32), seconds

    def describe(self) -> str:
        """One line of the document on these rows."""
        if self.scoring is None:
            return (f"- `cosine`: the unit models themselves (D = {self.width}), by cosine: the centroids a "
                    "cosine back-end searches (`CentroidScoring`).")
        parts = getattr(self.scoring, "parts", None)
        scoring = f"`{type(self.scoring).__name__}`"
        if parts:
            scoring += " of " + " + ".join(f"`{type(part).__name__}` ({dim})" for part, dim in zip(parts, self.dims))
        return (f"- `{self.name}`: the built-in model `{self.name}`: embeddings of {sum(self.dims)} values, "
                f"{scoring}; rows of {self.width} values (`search_vectors(models, counts)`, "
                f"`query_vectors(tests)`), by {self.metric.replace('_', ' ')}.")


def make_rows(name: str) -> Rows:
    """The rows of ``name``: ``"cosine"``, or a built-in model (loaded, with one torch thread)."""
    if name == "cosine":
        return Rows(name, (DIM,), "cosine")
    import torch

    import voxprint
    from voxprint.identification.scoring import speaker_scoring

    torch.set_num_threads(1)
    model = voxprint.load_model(name)
    dims = tuple(getattr(model.backend, "dims", (model.embedding_dim,)))  # a fusion's parts
    assert sum(dims) == model.embedding_dim, (dims, model.embedding_dim)
    scoring = speaker_scoring(model.backend)
    return Rows(name, dims, scoring.metric, scoring)


def gallery(n: int, queries: int, dims: tuple[int, ...] = (DIM,), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n + ADDS, D)`` unit speaker embeddings (the last ADDS for enrollment) and ``(queries, D)`` test
    embeddings near the first ``n``; ``D = sum(dims)``. With several parts, each part's slice is made alike
    (the same groups and test speakers, its own centres and noise) and the parts joined by
    :func:`~voxprint.backends.fused.join_parts`, so each slice is a unit vector."""
    rng = np.random.default_rng(seed)
    total = n + ADDS
    groups = max(1, total // GROUP)
    members = rng.integers(0, groups, total)
    picked = rng.integers(0, n, queries)
    models, tests = [], []
    for dim in dims:
        centres = _unit(rng.normal(size=(groups, dim)))
        part = np.empty((total, dim), dtype=np.float32)
        for lo in range(0, total, BLOCK):  # in blocks: float64 noise for 10^6 speakers would be 1.5 GiB
            hi = min(lo + BLOCK, total)
            part[lo:hi] = _unit(centres[members[lo:hi]] + SPEAKER_SPREAD * _unit(rng.normal(size=(hi - lo, dim))))
        models.append(part)
        tests.append(_unit(part[picked] + QUERY_SPREAD * _unit(rng.normal(size=(queries, dim)))))
    if len(dims) == 1:
        return models[0], tests[0]
    joined = join_parts(models)
    del models
    return joined, join_parts(tests)


def search_data(rows: Rows, n: int, queries: int, seed: int = 0) -> dict[str, Any]:
    """A synthetic gallery of ``n`` speakers (and ADDS more to enroll) and its queries, as ``rows``."""
    embeddings, tests = gallery(n, queries, rows.dims, seed)
    speakers, rows_seconds = rows.speaker_rows(embeddings)
    del embeddings
    asked, query_seconds = rows.query_rows(tests)
    return {"models": speakers[:n], "extra": speakers[n:], "tests": asked, "rows_s": rows_seconds,
            "query_rows_ms": 1e3 * query_seconds}


def rss_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_free_memory() -> None:
    """Collect garbage and hand the heap's free pages back to the system. Done before and after a build, the
    growth of the RSS is the index's own memory: malloc serves a large block from free space inside the heap
    before it maps a new one (freed small blocks, e.g. of FAISS's growing inverted lists, leave such space
    resident, which would hide the index), and the build's temporaries freed there stay resident too."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def latencies(index: SpeakerIndex, tests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per query (one query per call, as identification asks) and the rows found."""
    index.search_rows(tests[0], TOP)  # first call: page faults, lazy set-up
    seconds, rows = [], []
    for query in tests:
        start = clock()
        found, _ = index.search_rows(query, TOP)
        seconds.append(clock() - start)
        rows.append(found[0])
    return np.array(seconds), np.array(rows)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-5 among the top-5 found."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / TOP for a, b in zip(found, truth)]))


def measure(rows: Rows, n: int, queries: int, exact_queries: int) -> list[dict]:
    """Both index kinds on ``rows`` at one gallery size."""
    LOADS.append(os.getloadavg()[0])
    data = search_data(rows, n, queries)
    models, extra, tests = data["models"], data["extra"], data["tests"]
    ids = [f"spk{i:07d}" for i in range(n)]
    new_ids = [f"new{i:07d}" for i in range(ADDS)]
    # One GEMM per block of queries.
    truth = SpeakerIndex.build(ids, models, kind="exact", metric=rows.metric).search_rows(tests, TOP)[0]
    results = []
    for kind in ("exact", "faiss"):
        release_free_memory()
        before = rss_bytes()
        start = clock()
        index = SpeakerIndex.build(ids, models, kind=kind, metric=rows.metric)
        build = clock() - start
        release_free_memory()  # the build's temporaries, which may have come from the heap's free space
        memory = rss_bytes() - before
        asked = tests[:exact_queries] if kind == "exact" else tests
        seconds, found = latencies(index, asked)
        start = clock()
        index.add([new_ids[0]], extra[:1])  # the first add also makes the set of ids (and may grow)
        first = clock() - start
        start = clock()
        for i in range(1, ADDS):
            index.add([new_ids[i]], extra[i:i + 1])
        adds = (ADDS - 1) / (clock() - start)
        results.append({"rows": rows.name, "width": rows.width, "speakers": n, "kind": kind, "build_s": build,
                        "adds_per_s": adds, "first_add_s": first,
                        "p50_ms": 1e3 * float(np.percentile(seconds, 50)),
                        "p99_ms": 1e3 * float(np.percentile(seconds, 99)), "queries": len(asked),
                        "memory_mib": memory / 2**20, "recall": recall(found, truth[:len(asked)]),
                        "lists": index_module.list_count(n) if kind == "faiss" else None, "nprobe": index.nprobe,
                        "rows_s": data["rows_s"], "query_rows_ms": data["query_rows_ms"]})
        print(results[-1], flush=True)
        del index
    return results


def crossover(rows: Rows, queries: int) -> tuple[list[list], int | None]:
    """Both index kinds on ``rows`` over CROSSOVER_SIZES; the first size where exact search takes
    EXACT_BUDGET_MS or more per query and FAISS is at least twice as fast."""
    LOADS.append(os.getloadavg()[0])
    table, found = [], None
    for n in CROSSOVER_SIZES:
        data = search_data(rows, n, queries, seed=1)
        models, tests = data["models"], data["tests"]
        ids = [str(i) for i in range(n)]
        exact_index = SpeakerIndex.build(ids, models, kind="exact", metric=rows.metric)
        exact = float(np.median(latencies(exact_index, tests)[0])) * 1e3
        start = clock()
        index = SpeakerIndex.build(ids, models, kind="faiss", metric=rows.metric)
        build = clock() - start
        approx = float(np.median(latencies(index, tests)[0])) * 1e3
        table.append([f"{n:,}", f"{exact:.3f}", f"{approx:.3f}", f"{exact / approx:.1f}x", f"{build:.2f}"])
        print(rows.name, table[-1], flush=True)
        if found is None and exact >= EXACT_BUDGET_MS and exact >= 2 * approx:
            found = n
    return table, found


def summary(rows: Rows, results: list[dict]) -> str:
    """The sentence on the largest gallery measured with ``rows`` (against the issue's target at 10^6)."""
    largest = max(r["speakers"] for r in results if r["rows"] == rows.name)
    exact, approx = (next(r for r in results if r["rows"] == rows.name and r["speakers"] == largest and r["kind"] == k)
                     for k in ("exact", "faiss"))
    text = (f"`{rows.name}` rows ({rows.width} values, {rows.metric.replace('_', ' ')}): at {largest:,} speakers "
            f"FAISS answers a top-5 query in {approx['p50_ms']:.1f} ms (p50), {approx['p99_ms']:.1f} ms (p99), "
            f"with recall@5 {approx['recall']:.3f}; exact search in {exact['p50_ms']:.1f} ms (p50)")
    if rows.scoring is not None:
        text += (f"; making the query row (`query_vectors`) takes {approx['query_rows_ms']:.2f} ms more per query, "
                 f"and the rows of the {largest + ADDS:,} speakers (`search_vectors`) {approx['rows_s']:.1f} s "
                 "on each rebuild of the store's index")
    if largest == TARGET_SPEAKERS:
        total = approx["p99_ms"] + approx["query_rows_ms"]
        text += (f". Target (top-5 among {TARGET_SPEAKERS:,} speakers in at most {TARGET_MS:g} ms per query, one "
                 f"thread): {'met' if total <= TARGET_MS else 'not met'}, p99 "
                 f"{'with the query row ' if rows.scoring is not None else ''}{total:.1f} ms")
    return text + "."


def crossover_notes(rows: Rows, table: list[list], found: int | None, queries: int) -> list[str]:
    """The crossover table of ``rows`` (``queries`` per size) and the sentence on it."""
    cross = format_table(["speakers", "exact p50 (ms)", "FAISS p50 (ms)", "FAISS speed-up", "FAISS build (s)"], table)
    verdict = (f"Measured crossover: {found:,} speakers, the first size where one exact query takes "
               f"{EXACT_BUDGET_MS:g} ms or more and FAISS is at least twice as fast"
               if found else "Measured crossover: none at these sizes")
    verdict += ("; the same as `EXACT_MAX_SPEAKERS`" if found == EXACT_MAX_SPEAKERS else
                f"; `EXACT_MAX_SPEAKERS` is {EXACT_MAX_SPEAKERS:,} (left as it is: `kind=\"auto\"` searches these "
                "rows exactly up to there)")
    return [f"Crossover, `{rows.name}` rows (p50 latency of one top-5 query; the same synthetic data, {queries} "
            "queries per size):", "", cross.rstrip("\n"), "", verdict + ".", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=ROW_KINDS, default=list(ROW_KINDS),
                        help="the rows searched: cosine models, or the store's rows of a built-in model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries-1m", type=int, default=50,
                        help="queries timed for exact search of 10^6 speakers (each reads 10^6 rows)")
    args = parser.parse_args()
    started = time.monotonic()
    faiss.omp_set_num_threads(1)
    kinds = [make_rows(name) for name in dict.fromkeys(args.rows)]
    cross_queries = min(args.queries, 100)
    results, cross_notes = [], []
    with threadpool_limits(1):
        for rows in kinds:
            cross_notes += crossover_notes(rows, *crossover(rows, cross_queries), cross_queries)
            for n in args.sizes:
                results += measure(rows, n, args.queries, args.exact_queries_1m if n >= 1_000_000 else args.queries)

    table = format_table(
        ["rows", "speakers", "index", "build (s)", "first add (s)", "enroll (adds/s)", "top-5 p50 (ms)",
         "top-5 p99 (ms)", "queries", "memory (MiB)", "recall@5"],
        [[f"{r['rows']} ({r['width']})", f"{r['speakers']:,}", "exact (BLAS)" if r["kind"] == "exact" else
          f"FAISS IVF-SQ8 + refine, {r['lists']} lists, nprobe {r['nprobe']}", f"{r['build_s']:.2f}",
          f"{r['first_add_s']:.3f}", f"{r['adds_per_s']:,.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
          r["queries"], f"{r['memory_mib']:.1f}", f"{r['recall']:.3f}"] for r in results])
    notes = [
        "Synthetic unit embeddings shaped like the bundled models': groups of 100 speakers around random",
        "centres (cosine about 0.5 within a group), test embeddings near a random speaker (cosine about",
        "0.84 to its model, 0.55 to the best other one; the bundled model gives 0.82 and 0.58 on",
        "speechocean762 dev); a fused model's embedding joins its parts' unit embeddings, each made so",
        "(`join_parts`; the same groups and test speakers). The rows searched are the speaker store's",
        "(`SpeakerStore.identify_embedding`) for each kind of back-end (the `rows` column gives their width):",
        "",
        *(rows.describe() for rows in kinds),
        "",
        "For a built-in model every speaker is enrolled with one synthetic embedding (`scoring.models` of",
        "the embeddings, n = 1), its row `search_vectors` of that model; recall is against exact search on",
        "the same rows, i.e. the exact top 5 by the back-end's raw score (the PLDA log-likelihood ratio).",
        "One query per call, top 5 (the store asks for 50 candidates and rescores them; the exact kind's",
        "cost barely depends on k); the latency is of the index search, from the query's row. Build: from",
        "the (N, width) rows (exact: copy, cosine rows normalised; FAISS: inner-product rows get one more",
        "coordinate that gives them all the same norm, then k-means for the lists on 64 rows per list,",
        "then add; its queries compare 8-bit codes, then rescore 4 k candidates with float32 rows).",
        f"Enroll: {ADDS:,} `add` calls of one speaker each on the built index (its row made beforehand);",
        "the first one also makes the set of ids that refuses duplicates and, for the exact kind, grows",
        "its buffer by a quarter (both once); the rate is of the other calls (FAISS files each speaker",
        "under its nearest list). Memory: resident memory added by building the index (glibc maps every",
        "block over 64 KiB, and `malloc_trim` hands the heap's free pages back before and after the build,",
        "so freed arrays neither hide the index nor add to it); the exact kind holds a float32 copy of the",
        "rows, FAISS 8-bit codes and the float32 rows it rescores with (figures under 1 MiB are the",
        "allocator's noise). Recall@5: share of the exact top 5 that the index returns.",
        "Times are CPU time of the process (`time.process_time`, one thread): the machine was shared with",
        f"other jobs (1-minute load average {min(LOADS):.1f} to {max(LOADS):.1f} on {os.cpu_count()} cores during "
        f"the run, {(time.monotonic() - started) / 60:.0f} min), and waiting for a core is not search time.",
        "",
        *(f"- {summary(rows, results)}" for rows in kinds),
        "",
        *cross_notes,
        "Below 1 ms a query is not what identification waits for (embedding the recording and rescoring 50 "
        "candidates take longer), while exact search has recall 1 and needs no k-means build each time the store "
        f"changes; `kind=\"auto\"` switches at `EXACT_MAX_SPEAKERS` = {EXACT_MAX_SPEAKERS:,} for either metric "
        "(voxprint/store/index.py), set from the crossover of the cosine rows.",
    ]
    publish_benchmark(SECTION, ".venv/bin/python bench/speaker_search.py",
                      "One thread: OMP_NUM_THREADS=1, BLAS limited by threadpoolctl, faiss.omp_set_num_threads(1), "
                      "torch.set_num_threads(1).", notes, table)


if __name__ == "__main__":
    main()
