"""The HTTP service on real dev speech: every route, keys and roles, limits, the CLI's audio messages,
workers sharing a store, the key CLI, and a real uvicorn server killed (-9) during enrollments.

Each test runs on a SQLite store and on a PostgreSQL store (a real server that the module starts with
Debian's ``postgresql`` package; skipped when PostgreSQL is missing, unless ``VOXPRINT_REQUIRE_POSTGRES=1``).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the service needs the 'service' extra: pip install 'voxprint[service]'")
from fastapi.testclient import TestClient  # noqa: E402

import voxprint  # noqa: E402
from voxprint.cli import main  # noqa: E402
from voxprint.service.app import create_app  # noqa: E402
from voxprint.service.process import ServerProcess  # noqa: E402
from voxprint.service.settings import ServiceConfig  # noqa: E402
from voxprint.service.storage import open_keys  # noqa: E402

ROUTES = [("POST", "/v1/speakers/alice/enrollments"), ("GET", "/v1/speakers"), ("GET", "/v1/speakers/alice"),
          ("DELETE", "/v1/speakers/alice"), ("POST", "/v1/verify"), ("POST", "/v1/identify"),
          ("POST", "/v1/similarity"), ("POST", "/v1/embed"), ("GET", "/metrics")]


@pytest.fixture(scope="module")
def model():
    return voxprint.load_model("default")


@pytest.fixture(scope="module")
def voices(dev_dir) -> dict[str, list[Path]]:
    """Three unseen dev speakers' recordings (id -> sorted files)."""
    speakers = sorted(p.name for p in dev_dir.iterdir() if p.is_dir())[:3]
    return {s: sorted((dev_dir / s).glob("*.flac")) for s in speakers}


def upload(path: Path, field: str = "file") -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "audio/flac")


def wav_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


_databases = itertools.count()


def new_store(kind: str, root: Path, request) -> str:
    """A new, empty store of ``kind``: a SQLite file in ``root``, or a new database on the test server."""
    if kind == "sqlite":
        return str(root / "speakers.db")
    import psycopg

    server = request.getfixturevalue("postgres")
    name = f"voxprint_test_{next(_databases)}"
    with psycopg.connect(server.url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + "/" + name


class Deployment:
    """A store with three keys (admin, user, revoked user) and a way to make apps over it."""

    def __init__(self, store: str, model):
        self.store = store
        keys = open_keys(self.store)
        _, self.admin_key = keys.create("admin", label="test admin")
        _, self.user_key = keys.create("user")
        revoked, self.revoked_key = keys.create("user")
        keys.revoke(revoked.id)
        self.model = model

    def client(self, **settings) -> TestClient:
        settings.setdefault("rate_limit", 0)
        return TestClient(create_app(ServiceConfig(store=str(self.store), **settings), self.model),
                          raise_server_exceptions=False)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def user(self) -> dict[str, str]:
        return {"X-API-Key": self.user_key}


STORES = ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=STORES)
def deployment(request, tmp_path_factory, model) -> Deployment:
    return Deployment(new_store(request.param, tmp_path_factory.mktemp("service"), request), model)


@pytest.fixture(scope="module")
def client(deployment) -> TestClient:
    return deployment.client()


def test_health_and_page_need_no_key_and_the_docs_need_one(deployment, client):
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "MediaRecorder" not in page.text and 'src="/static/app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # No external resource: every src/href of the page is local.
    assert "http" not in " ".join(part.split('"')[1] for part in page.text.split("src=")[1:])
    assert "MediaRecorder" in client.get("/static/app.js").text
    assert client.get("/docs").status_code == 401 and client.get("/openapi.json").status_code == 401
    assert client.get("/docs", headers=deployment.user).status_code == 200
    paths = client.get("/openapi.json", headers=deployment.user).json()["paths"]
    assert {"/v1/verify", "/v1/identify", "/v1/similarity", "/v1/embed", "/v1/speakers",
            "/v1/speakers/{speaker_id}", "/v1/speakers/{speaker_id}/enrollments"} <= set(paths)


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_refuses_missing_wrong_and_revoked_keys_before_the_store(deployment, client, method, path,
                                                                             monkeypatch):
    service = client.app.state.service
    reached = []
    monkeypatch.setattr(service, "run", lambda *a: reached.append(a))
    monkeypatch.setattr(service, "store_gauges", lambda: reached.append("gauges"))
    tampered = deployment.admin_key[:-2] + ("AA" if not deployment.admin_key.endswith("AA") else "BB")
    for headers, word in [({}, "needs an API key"), ({"Authorization": f"Bearer {tampered}"}, "not valid"),
                          ({"X-API-Key": "vxp_000000000000_" + "A" * 43}, "not valid"),
                          ({"Authorization": "Basic dXNlcjpwYXNz"}, "needs an API key"),
                          ({"X-API-Key": deployment.revoked_key}, "was revoked")]:
        response = client.request(method, path, headers=headers, files={"file": ("a.wav", b"RIFF")})
        assert response.status_code == 401, (headers, response.text)
        assert word in response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
    assert reached == []


@pytest.mark.parametrize("method,path", [("POST", "/v1/speakers/alice/enrollments"), ("DELETE", "/v1/speakers/alice")])
def test_user_keys_cannot_enroll_or_delete(deployment, client, voices, method, path):
    files = [upload(next(iter(voices.values()))[0], "files")] if method == "POST" else None
    before = client.get("/v1/speakers", headers=deployment.user).json()
    response = client.request(method, path, headers=deployment.user, files=files)
    assert response.status_code == 403 and "needs an admin key" in response.json()["error"]
    assert client.get("/v1/speakers", headers=deployment.user).json() == before


def test_enroll_show_verify_identify_compare_embed_delete(deployment, client, voices, model):
    (a, files_a), (b, files_b), _ = voices.items()
    response = client.post("/v1/speakers/alice/enrollments", headers=deployment.admin, data={"name": "Alice"},
                           files=[upload(f, "files") for f in files_a[:2]])
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "alice", "name": "Alice", "enrollments": 2, "seconds": pytest.approx(
        response.json()["seconds"])} and response.json()["seconds"] > 2
    again = client.post("/v1/speakers/alice/enrollments", headers=deployment.admin,
                        files=[upload(f, "files") for f in files_a[:2]])
    assert again.json()["enrollments"] == 2  # the same recordings again: nothing added
    client.post("/v1/speakers/bob/enrollments", headers=deployment.admin, files=[upload(files_b[0], "files")])

    listed = client.get("/v1/speakers", headers=deployment.user).json()
    assert [s["id"] for s in listed["speakers"]] == ["alice", "bob"] and listed["count"] == 2
    shown = client.get("/v1/speakers/alice", headers=deployment.user).json()
    assert [r["source"].split(" ")[0] for r in shown["recordings"]] == [f.name for f in files_a[:2]]

    same = client.post("/v1/verify", headers=deployment.user, data={"speaker": "alice"}, files=[upload(files_a[3])])
    other = client.post("/v1/verify", headers=deployment.user, data={"speaker": "alice"}, files=[upload(files_b[3])])
    assert same.json()["decision"] == "accept" and other.json()["decision"] == "reject"
    assert same.json()["threshold"] == pytest.approx(model.threshold) and same.json()["score"] > model.threshold
    # The service's score is the store's score of the same file.
    from voxprint.service.storage import open_store

    direct = open_store(deployment.store, model).verify("alice", files_a[3])
    assert same.json()["score"] == pytest.approx(direct["score"], abs=1e-4)

    found = client.post("/v1/identify", headers=deployment.user, data={"top_k": "2"}, files=[upload(files_a[4])])
    assert found.json()["speaker"] == "alice" and [c["speaker"] for c in found.json()["top"]] == ["alice", "bob"]
    similar = client.post("/v1/similarity", headers=deployment.user,
                          files=[upload(files_a[4], "a"), upload(files_a[5], "b")]).json()["cosine"]
    assert similar == pytest.approx(model.compute_similarity(files_a[4], files_a[5]), abs=1e-5)
    embedded = client.post("/v1/embed", headers=deployment.user, files=[upload(files_a[4])]).json()
    assert embedded["dim"] == 192 and embedded["model"] == model.identity
    assert np.allclose(embedded["embedding"], model.extract_embedding(files_a[4]), atol=1e-5)

    assert client.delete("/v1/speakers/bob", headers=deployment.admin).json() == {"removed": "bob"}
    for response in [client.get("/v1/speakers/bob", headers=deployment.user),
                     client.delete("/v1/speakers/bob", headers=deployment.admin),
                     client.post("/v1/verify", headers=deployment.user, data={"speaker": "bob"},
                                 files=[upload(files_b[1])])]:
        assert response.status_code == 404 and response.json() == {
            "error": "no speaker 'bob' is enrolled; GET /v1/speakers lists who is"}


def _cli_message(capsys, path: Path) -> str:
    assert main(["similarity", str(path), str(path)]) == 1
    return capsys.readouterr().err.strip().removeprefix("voxprint: error: ")


@pytest.fixture(scope="module", params=STORES)
def with_dora(request, tmp_path_factory, model, voices) -> tuple[Deployment, TestClient]:
    """Another deployment, with one speaker enrolled."""
    other = Deployment(new_store(request.param, tmp_path_factory.mktemp("dora"), request), model)
    client = other.client()
    files = list(voices.values())[2]
    assert client.post("/v1/speakers/dora/enrollments", headers=other.admin,
                       files=[upload(files[0], "files")]).status_code == 200
    return other, client


@pytest.mark.parametrize("case", ["not audio", "empty", "silence", "too short", "truncated flac"])
def test_bad_audio_is_422_with_the_cli_message(with_dora, voices, tmp_path, capsys, case):
    deployment, client = with_dora
    good = next(iter(voices.values()))[0].read_bytes()
    data = {"not audio": b"this is a text file, not a recording\n" * 20, "empty": b"",
            "silence": wav_bytes(np.zeros(32000, dtype=np.float32)),
            "too short": wav_bytes(0.1 * np.sin(np.arange(800, dtype=np.float32))),
            "truncated flac": good[:200]}[case]
    name = "clip.wav" if case != "truncated flac" else "clip.flac"
    path = tmp_path / name
    path.write_bytes(data)
    expected = _cli_message(capsys, path).replace(str(path), name)
    for route, fields in [("/v1/embed", {}), ("/v1/verify", {"speaker": "dora"}), ("/v1/identify", {})]:
        response = client.post(route, headers=deployment.user, data=fields, files={"file": (name, data)})
        assert response.status_code == 422, response.text
        assert response.json() == {"error": expected}
    response = client.post("/v1/speakers/carol/enrollments", headers=deployment.admin, files={"files": (name, data)})
    assert response.status_code == 422 and response.json() == {"error": expected}
    assert [s["id"] for s in client.get("/v1/speakers", headers=deployment.user).json()["speakers"]] == ["dora"]


def test_malformed_requests_are_one_line_400s(deployment, client, voices):
    file = next(iter(voices.values()))[0]
    for response, words in [
        (client.post("/v1/verify", headers=deployment.user, files=[upload(file)]), "missing speaker"),
        (client.post("/v1/embed", headers=deployment.user), "missing file"),
        (client.post("/v1/identify", headers=deployment.user, data={"top_k": "0"}, files=[upload(file)]), "top_k"),
        (client.post("/v1/identify", headers=deployment.user, data={"top_k": "many"}, files=[upload(file)]), "top_k"),
        (client.post("/v1/verify", headers=deployment.user, data={"speaker": "../etc"}, files=[upload(file)]),
         "invalid speaker id"),
        (client.get("/v1/speakers/" + "x" * 200, headers=deployment.user), "invalid speaker id"),
        (client.post("/v1/speakers/bad%20id!/enrollments", headers=deployment.admin, files=[upload(file, "files")]),
         "invalid speaker id"),
    ]:
        assert response.status_code == 400, response.text
        assert words in response.json()["error"] and "\n" not in response.json()["error"]
    assert client.get("/v1/nothing", headers=deployment.user).status_code == 404
    assert client.put("/v1/speakers", headers=deployment.user).status_code == 405


def test_limits_413_429_504(deployment, voices):
    file = next(iter(voices.values()))[0]  # 3.5 s, 60 kB
    small = deployment.client(max_upload_bytes=50_000)
    response = small.post("/v1/embed", headers=deployment.user, files=[upload(file)])
    assert response.status_code == 413 and "larger than the service's limit" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        data = file.read_bytes()
        for i in range(0, len(data), 10_000):
            yield data[i:i + 10_000]

    chunked = small.post("/v1/embed", headers={**deployment.user, "Content-Type": "multipart/form-data; boundary=x"},
                         content=chunks())
    assert chunked.status_code == 413
    short = deployment.client(max_audio_seconds=2.0)
    response = short.post("/v1/embed", headers=deployment.user, files=[upload(file)])
    assert response.status_code == 413 and response.json()["error"] == (
        f"{file.name} is {sf.info(str(file)).duration:.1f} s long, more than the service's limit of 2 s; "
        "send a shorter recording")

    limited = deployment.client(rate_limit=60, rate_burst=2)
    codes = [limited.get("/v1/speakers", headers=deployment.user).status_code for _ in range(3)]
    refused = limited.get("/v1/speakers", headers=deployment.user)
    assert codes == [200, 200, 429] and refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert limited.get("/v1/speakers", headers=deployment.admin).status_code == 200  # another key's bucket

    hurried = deployment.client(timeout=0.2)

    async def stuck(work):  # e.g. every compute slot busy
        await asyncio.sleep(5)

    hurried.app.state.service.run = stuck
    started = time.monotonic()
    response = hurried.post("/v1/embed", headers=deployment.user, files=[upload(file)])
    assert response.status_code == 504 and "longer than the service's 0.2 s limit" in response.json()["error"]
    assert time.monotonic() - started < 2


def test_no_cors_unless_configured(deployment):
    origin = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    plain = deployment.client().get("/v1/speakers", headers={**deployment.user, **origin})
    assert "access-control-allow-origin" not in plain.headers
    allowed = deployment.client(cors_origins=("https://app.example",))
    preflight = allowed.options("/v1/speakers", headers={**origin, "Origin": "https://app.example"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in allowed.options("/v1/speakers", headers=origin).headers


def test_metrics_count_requests_by_route_and_show_the_store(deployment, client):
    client.get("/v1/speakers/alice", headers=deployment.user)
    text = client.get("/metrics", headers=deployment.user).text
    assert 'route="/v1/speakers/{speaker_id}",status="200"}' in text
    assert 'route="/v1/speakers/{speaker_id}",le="+Inf"}' in text
    assert "voxprint_store_speakers{" in text and "voxprint_store_version{" in text
    assert 'route="/v1/speakers",status="401"}' in text  # refusals are counted too


@pytest.mark.parametrize("kind", STORES)
def test_workers_sharing_a_store_see_each_others_writes(request, tmp_path, model, voices, kind):
    """Two apps over one store (two workers): identification in one follows enrollments and deletions in
    the other, through the store's version counter."""
    shared = Deployment(new_store(kind, tmp_path, request), model)
    first, second = shared.client(), shared.client()
    (a, files_a), (b, files_b), _ = voices.items()
    first.post("/v1/speakers/ann/enrollments", headers=shared.admin, files=[upload(files_a[0], "files")])
    assert second.post("/v1/identify", headers=shared.user, files=[upload(files_a[3])]).json()["speaker"] == "ann"
    first.post("/v1/speakers/ben/enrollments", headers=shared.admin, files=[upload(files_b[0], "files")])
    assert second.post("/v1/identify", headers=shared.user, files=[upload(files_b[3])]).json()["speaker"] == "ben"
    first.delete("/v1/speakers/ben", headers=shared.admin)
    result = second.post("/v1/identify", headers=shared.user, files=[upload(files_b[3])]).json()
    assert result["gallery"] == 1 and [c["speaker"] for c in result["top"]] == ["ann"]


def _stored_key_rows(store: str) -> list[tuple]:
    """Every row of the key table, read directly from the database."""
    if store.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store) as db:
            return db.execute("SELECT * FROM voxprint_service_keys").fetchall()
    with sqlite3.connect(store) as db:
        return db.execute("SELECT * FROM service_keys").fetchall()


@pytest.mark.parametrize("kind", STORES)
def test_keys_cli_prints_the_key_once_and_stores_only_its_hash(request, tmp_path, capsys, model, kind):
    store = new_store(kind, tmp_path, request)
    assert main(["keys", "create", "--store", store, "--role", "admin", "--label", "ops"]) == 0
    key = capsys.readouterr().out.split()[-1]
    assert key.startswith("vxp_")
    key_id, secret = key.split("_", 2)[1:]
    rows = _stored_key_rows(store)
    assert len(rows) == 1 and rows[0][0] == key_id and rows[0][2] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(rows)
    if kind == "sqlite":  # nowhere in the file either
        assert secret.encode() not in Path(store).read_bytes() + Path(f"{store}-wal").read_bytes()
    assert main(["keys", "list", "--store", store]) == 0
    assert capsys.readouterr().out.split() == [key_id, "admin", "active", "ops"]
    client = TestClient(create_app(ServiceConfig(store=store), model))
    assert client.get("/v1/speakers", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert main(["keys", "revoke", "--store", store, "--id", key_id]) == 0
    assert client.get("/v1/speakers", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert main(["keys", "revoke", "--store", store, "--id", "000000000000"]) == 1
    assert "no API key '000000000000'" in capsys.readouterr().err
    if kind == "sqlite":
        assert main(["keys", "list", "--store", str(tmp_path / "missing.db")]) == 1
        assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("kind", STORES)
def test_a_real_server_killed_during_enrollments_keeps_every_acknowledged_one(request, tmp_path, voices, kind):
    """uvicorn in a subprocess: real HTTP, then kill -9 while two clients enroll; after a restart every
    enrollment the server acknowledged (HTTP 200) is there."""
    store = new_store(kind, tmp_path, request)
    keys = open_keys(store)
    _, admin = keys.create("admin")
    _, user = keys.create("user")
    recordings = [f for files in voices.values() for f in files[:4]]
    server = ServerProcess(store, ["--rate-limit", "0", "--threads", "1", "--no-optimize"],
                           log=tmp_path / "server.log").start()
    acknowledged: list[str] = []
    errors: list[str] = []
    try:
        assert server.request("GET", "/v1/speakers")[0] == 401
        assert server.request("GET", "/v1/speakers", key=user) == (200, {"speakers": [], "count": 0})

        def enroll(client: int) -> None:
            for i in range(100):
                speaker = f"c{client}-{i}"
                audio = recordings[(2 * i + client) % len(recordings)]
                try:
                    status, body = server.request("POST", f"/v1/speakers/{speaker}/enrollments", key=admin,
                                                  files=[("files", audio.name, audio.read_bytes())], timeout=30)
                except OSError:  # the server died under this request: not acknowledged
                    return
                if status != 200:
                    errors.append(f"{status} {body}")
                    return
                acknowledged.append(speaker)

        clients = [threading.Thread(target=enroll, args=(c,)) for c in range(2)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 6 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        server.kill()
        for thread in clients:
            thread.join()
    finally:
        server.kill()
    assert not errors and len(acknowledged) >= 6
    with ServerProcess(store, ["--threads", "1", "--no-optimize"], log=tmp_path / "server.log") as restarted:
        status, body = restarted.request("GET", "/v1/speakers", key=user)
        assert status == 200
        present = {s["id"]: s["enrollments"] for s in body["speakers"]}
        assert set(acknowledged) <= set(present) and all(count == 1 for count in present.values())
        assert len(present) - len(acknowledged) <= 2  # at most the in-flight ones committed unacknowledged
        status, body = restarted.request("POST", "/v1/identify", key=user, files=[
            ("file", recordings[0].name, recordings[0].read_bytes())])
        assert status == 200 and body["gallery"] == len(present)
