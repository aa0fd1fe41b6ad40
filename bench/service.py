#!/usr/bin/env python3
"""The HTTP service under load: throughput, latency, and nothing lost when the server is killed.

    .venv/bin/python bench/service.py [--seconds 60] [--clients 16] [--enrollments 500] [--workers 2]

Runs the real server (``voxprint serve``: uvicorn, ``--workers`` processes, one torch thread and one
request at a time each) and a load generator (``--clients`` threads, each sending one request after
the other over HTTP) on the same machine, with real 3 s speechocean762 dev recordings:

1. verify, then identify, for ``--seconds`` each against a gallery of 20 enrolled dev speakers:
   requests/s, p50/p99 latency, errors and 5xx;
2. ``--enrollments`` enrollments (one distinct dev or train recording each, to its speaker) from the clients,
   then the store's count of enrollment recordings, which must equal the acknowledged ones;
3. an enrollment burst during which the server is killed (SIGKILL to every process), then a restart:
   every acknowledged enrollment must be there.

Writes docs/benchmarks.md, section "HTTP service".
"""
from __future__ import annotations

import argparse
import io
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from voxprint.data import read_data_folder
from voxprint.paths import data_root
from voxprint.report import format_table, publish_benchmark
from voxprint.service.keys import KeyTable
from voxprint.service.process import ServerProcess

SECTION = "HTTP service"
GALLERY = 20
CLIP_SECONDS = 3.0


def clip(path: str, seconds: float = CLIP_SECONDS) -> bytes:
    """The first ``seconds`` of a recording, as 16-bit WAV bytes."""
    wave, rate = sf.read(path, dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, wave[: int(seconds * rate)], rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class Load:
    """Closed-loop clients: each sends its next request when the previous one is answered."""

    def __init__(self, server: ServerProcess, key: str, clients: int):
        self.server, self.key, self.clients = server, key, clients
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.acknowledged: list[tuple[str, str]] = []
        self.refusals: list[str] = []  # the messages of answers other than 200
        self._lock = threading.Lock()

    def run(self, make_request, seconds: float | None = None, jobs: list | None = None,
            stop: threading.Event | None = None) -> float:
        """Run until ``seconds`` pass or ``jobs`` run out (or ``stop`` is set); returns the wall time."""
        queue = list(jobs or [])
        deadline = time.monotonic() + seconds if seconds else None

        def client(index: int) -> None:
            rng = random.Random(index)
            while not (stop and stop.is_set()):
                if deadline is not None and time.monotonic() >= deadline:
                    return
                with self._lock:
                    if jobs is not None and not queue:
                        return
                    job = queue.pop() if jobs is not None else None
                method, path, fields, files, ack = make_request(rng, job)
                start = time.perf_counter()
                try:
                    status, body = self.server.request(method, path, key=self.key, fields=fields, files=files,
                                                       timeout=120)
                except OSError:  # the server was killed under this request: not acknowledged
                    return
                with self._lock:
                    self.latencies.append(time.perf_counter() - start)
                    self.statuses.append(status)
                    if status == 200 and ack is not None:
                        self.acknowledged.append(ack)
                    elif status != 200:
                        self.refusals.append(f"{status} {body.get('error') if isinstance(body, dict) else body}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start

    def row(self, name: str, wall: float, extra: str = "") -> list:
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        statuses = np.array(self.statuses)
        # The 1-minute load average at the end of the phase: other jobs on the machine take cores too.
        return [name, len(self.statuses), f"{len(self.statuses) / wall:.1f}", f"{np.percentile(lat, 50):.3f}",
                f"{np.percentile(lat, 99):.3f}", int((statuses != 200).sum()), int((statuses >= 500).sum()),
                f"{os.getloadavg()[0]:.1f}", extra]


def stored_enrollments(store: Path) -> set[tuple[str, str]]:
    """(speaker, source) of every enrollment in the store, read directly from its file."""
    with sqlite3.connect(store) as db:
        return set(db.execute("SELECT speaker, source FROM enrollments").fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each load phase")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--enrollments", type=int, default=500, help="recordings enrolled concurrently")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--crash-after", type=int, default=40, help="acknowledged enrollments before the kill")
    args = parser.parse_args()

    dev = read_data_folder(data_root() / "speechocean762" / "dev")
    from voxprint.service.uploads import source_name

    root = Path(tempfile.mkdtemp(prefix="voxprint-bench-service-"))
    store = root / "speakers.db"
    keys = KeyTable(store)
    _, admin = keys.create("admin", label="bench")
    _, user = keys.create("user", label="bench")
    serve_args = ["--workers", str(args.workers), "--threads", "1", "--concurrency", "1", "--rate-limit", "0",
                  "--log-level", "warning"]
    gallery = dev.speakers[:GALLERY]
    print(f"store {store}; preparing recordings", flush=True)
    enroll_clips = {s: [clip(dev.wav[u]) for u in dev.spk2utt[s][:2]] for s in gallery}
    test_clips = [(s, clip(dev.wav[u])) for s in gallery for u in dev.spk2utt[s][2:6]]
    # Recordings not used above (the rest of dev, then train, to have enough): one enrollment each, to
    # its own speaker.
    train = read_data_folder(data_root() / "speechocean762" / "train")
    used = {u for s in gallery for u in dev.spk2utt[s][:6]}
    spare = [(dev.utt2spk[u], dev.wav[u]) for u in dev.utterances if u not in used]
    spare += [(train.utt2spk[u], train.wav[u]) for u in train.utterances]
    random.Random(0).shuffle(spare)
    burst = spare[: args.enrollments]
    crash = spare[args.enrollments: args.enrollments + 4 * args.crash_after]

    rows = []
    server = ServerProcess(store, serve_args, log=root / "server.log").start()
    try:
        for speaker, clips in enroll_clips.items():
            status, body = server.request("POST", f"/v1/speakers/{speaker}/enrollments", key=admin,
                                          files=[("files", f"{speaker}-{i}.wav", c) for i, c in enumerate(clips)])
            assert status == 200, body

        def verify(rng, _):
            speaker, audio = rng.choice(test_clips)
            claimed = speaker if rng.random() < 0.5 else rng.choice(gallery)
            return "POST", "/v1/verify", {"speaker": claimed}, [("file", "test.wav", audio)], None

        def identify(rng, _):
            _, audio = rng.choice(test_clips)
            return "POST", "/v1/identify", {"top_k": "5"}, [("file", "test.wav", audio)], None

        for name, make in [("verify", verify), ("identify", identify)]:
            print(f"{name}: {args.clients} clients for {args.seconds:g} s", flush=True)
            load = Load(server, user, args.clients)
            rows.append(load.row(name, load.run(make, seconds=args.seconds)))
            print(rows[-1], flush=True)

        def enroll(rng, job):
            speaker, path = job
            data = clip(path, 30.0)
            name = Path(path).with_suffix(".wav").name
            return ("POST", f"/v1/speakers/{speaker}/enrollments", None, [("files", name, data)],
                    (speaker, source_name(data, name)))

        print(f"enrollment: {len(burst)} recordings from {args.clients} clients", flush=True)
        before = stored_enrollments(store)
        load = Load(server, admin, args.clients)
        wall = load.run(enroll, jobs=list(burst))
        added = stored_enrollments(store) - before
        lost = len(set(load.acknowledged) - added)
        rows.append(load.row(f"enroll {len(burst)} recordings", wall,
                             f"{len(load.acknowledged)} acknowledged, {len(added)} in the store, {lost} lost"))
        refusals = list(load.refusals)
        print(rows[-1], refusals, flush=True)

        print(f"crash: kill -9 after {args.crash_after} acknowledged enrollments", flush=True)
        load = Load(server, admin, args.clients)
        stop = threading.Event()
        runner = threading.Thread(target=lambda: load.run(enroll, jobs=list(crash), stop=stop))
        started = time.perf_counter()
        runner.start()
        while len(load.acknowledged) < args.crash_after and runner.is_alive():
            time.sleep(0.01)
        server.kill()
        stop.set()
        runner.join()
        wall = time.perf_counter() - started
    finally:
        server.kill()
    restarted = ServerProcess(store, serve_args, log=root / "server.log").start()
    try:
        status, body = restarted.request("GET", "/v1/speakers", key=user)
        assert status == 200, body
    finally:
        restarted.stop()
    present = stored_enrollments(store)
    lost = len(set(load.acknowledged) - present)
    rows.append(load.row("enroll, server killed (-9) and restarted", wall,
                         f"{len(load.acknowledged)} acknowledged before the kill, {lost} lost after restart"))
    print(rows[-1], flush=True)

    table = format_table(["phase", "requests", "requests/s", "p50 latency (s)", "p99 latency (s)", "errors",
                          "5xx", "load average", "store check"], rows)
    command = " ".join([".venv/bin/python bench/service.py", *sys.argv[1:]])
    conditions = (f"Server: `voxprint serve --workers {args.workers} --threads 1 --concurrency 1` (uvicorn) on the "
                  f"same machine as the load generator ({args.clients} closed-loop client threads).")
    notes = [
        f"Real speechocean762 dev recordings cut to {CLIP_SECONDS:g} s; verify and identify run against {GALLERY} "
        "enrolled dev speakers (2 recordings each), half the verify claims false. Each client sends its next "
        "request when the previous one is answered, so latency includes queueing: with "
        f"{args.clients} clients and R requests/s, the mean latency is {args.clients}/R s (Little's law).",
        "",
        "Enrollment sends one distinct recording per request (dev and train), to its speaker (many get several "
        "concurrently); the store is then read directly. The crash row kills every server process with SIGKILL "
        "during an enrollment burst and counts acknowledged (HTTP 200) enrollments missing after a restart. "
        "Errors are refusals with a 4xx answer"
        + (f" ({'; '.join(sorted(set(refusals))[:3])})." if refusals else "."),
        "",
        "Targets (issue 12): at least 20 verify requests/s with p99 below 1 s, 0 lost, 0 5xx. The load average "
        "column is the machine's 1-minute load at the end of each phase: the server, the load generator and any "
        "other job share the 2 cores, and a load above 2 means requests waited for a core.",
    ]
    publish_benchmark(SECTION, command, conditions, notes, table)

if __name__ == "__main__":
    main()
