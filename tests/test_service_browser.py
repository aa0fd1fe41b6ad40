"""The web page end to end in headless Chromium (Debian's ``chromium``, driven by Playwright) with a fake
microphone playing real dev speech: enroll a speaker by recording, verify another recording of the same
speaker (accepted) and one of another speaker (rejected), identify, delete. Screenshots go to a
temporary folder (the test prints where).

Skipped when Playwright or Chromium is missing, unless ``VOXPRINT_REQUIRE_BROWSER=1`` (CI), which makes
that a failure naming what to install.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the service needs the 'service' extra: pip install 'voxprint[service]'")
from voxprint.service.keys import KeyTable  # noqa: E402
from voxprint.service.process import ServerProcess  # noqa: E402

CHROMIUM = os.environ.get("VOXPRINT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Seconds of each "recording" (the fake microphone plays the file from its start).
ENROLL_SECONDS, TEST_SECONDS = 6.0, 4.0
SCORED = ("/v1/verify", "/v1/identify")


def _browser_or_skip():
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright is not installed (pip install playwright; no browser download is needed)"
    if problem is None and not Path(CHROMIUM).is_file():
        problem = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, or set VOXPRINT_CHROMIUM)"
    if problem is not None:
        if os.environ.get("VOXPRINT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"VOXPRINT_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    return sync_playwright


def _speech_wav(files: list[Path], out: Path) -> Path:
    """Recordings joined into one 16-bit WAV: what Chromium's fake microphone plays."""
    wave = np.concatenate([sf.read(str(f), dtype="float32")[0] for f in files])
    sf.write(str(out), wave, 16000, subtype="PCM_16")
    return out


def test_enroll_by_recording_then_verify_accepts_the_speaker_and_rejects_another(tmp_path, dev_dir):
    sync_playwright = _browser_or_skip()
    speakers = sorted(p.name for p in dev_dir.iterdir() if p.is_dir())[:2]
    own, other = (sorted((dev_dir / s).glob("*.flac")) for s in speakers)
    microphones = {"enroll": _speech_wav(own[:3], tmp_path / "enroll.wav"),
                   "same": _speech_wav(own[3:5], tmp_path / "same.wav"),
                   "other": _speech_wav(other[:2], tmp_path / "other.wav")}
    shots = tmp_path / "screenshots"
    shots.mkdir()
    answers: list[dict] = []  # the service's verify and identify answers, shown when the test fails
    store = tmp_path / "speakers.db"
    _, key = KeyTable(store).create("admin")

    def record(page, name: str, seconds: float) -> None:
        page.click(f"#{name}-record")
        page.wait_for_timeout(seconds * 1000)
        page.click(f"#{name}-record")
        page.wait_for_selector(f"#{name}-clips li", timeout=20_000)  # converted to WAV

    serve = ["--rate-limit", "0", "--threads", "1", "--no-optimize"]
    with ServerProcess(store, serve, log=tmp_path / "server.log") as server, sync_playwright() as playwright:

        def open_page(microphone: str):
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphones[microphone]}"])
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.on("response", lambda r: answers.append(r.json()) if r.url.endswith(SCORED) else None)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.fill("#api-key", key)
            page.click("#save-key")
            page.wait_for_selector("#key-status:has-text('Key accepted')")
            return browser, page, errors

        browser, page, errors = open_page("enroll")
        page.fill("#enroll-id", speakers[0])
        page.fill("#enroll-name", "Dev speaker")
        record(page, "enroll", ENROLL_SECONDS)
        page.click("#enroll-submit")
        page.wait_for_selector("#enroll-status:has-text('Enrolled')", timeout=30_000)
        page.wait_for_selector(f"#speakers-table td:has-text('{speakers[0]}')")
        page.screenshot(path=str(shots / "1-enrolled.png"), full_page=True)
        assert errors == []
        browser.close()

        browser, page, errors = open_page("same")
        page.fill("#verify-speaker", speakers[0])
        record(page, "verify", TEST_SECONDS)
        page.click("#verify-submit")
        verdict = page.wait_for_selector("#verify-result .verdict", timeout=30_000)
        assert verdict.text_content() == f"Accepted: this sounds like {speakers[0]}.", answers
        assert "above the threshold" in page.text_content("#verify-result")
        record(page, "identify", TEST_SECONDS)
        page.click("#identify-submit")
        verdict = page.wait_for_selector("#identify-result .verdict", timeout=30_000)
        assert verdict.text_content() == f"This sounds like {speakers[0]}.", answers
        page.screenshot(path=str(shots / "2-accepted.png"), full_page=True)
        assert errors == []
        browser.close()

        browser, page, errors = open_page("other")
        page.fill("#verify-speaker", speakers[0])
        record(page, "verify", TEST_SECONDS)
        page.click("#verify-submit")
        verdict = page.wait_for_selector("#verify-result .verdict", timeout=30_000)
        assert verdict.text_content() == f"Rejected: this does not sound like {speakers[0]}.", answers
        assert "below the threshold" in page.text_content("#verify-result")
        page.screenshot(path=str(shots / "3-rejected.png"), full_page=True)
        delete = f"#speakers-table button[data-speaker='{speakers[0]}']"
        page.click(delete)
        assert page.text_content(delete) == "Really delete?"  # one click never deletes
        page.click(delete)
        page.wait_for_selector("#speakers-status:has-text('Nobody is enrolled yet.')")
        assert errors == []
        browser.close()
    print(f"screenshots in {shots}; answers: {answers}")
