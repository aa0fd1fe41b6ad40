"""Shared fixtures: small slices of the real speech in ../shared/data (override with VOXPRINT_DATA)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from voxprint.paths import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "speechocean762" / "train" / "wav.scp").is_file():
        pytest.fail(f"real speech data not found under {root}; set VOXPRINT_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def train_dir(data_dir: Path) -> Path:
    return data_dir / "speechocean762" / "train"


@pytest.fixture(scope="session")
def dev_dir(data_dir: Path) -> Path:
    return data_dir / "speechocean762" / "dev"


@pytest.fixture(scope="session")
def fsdd_dir(data_dir: Path) -> Path:
    return data_dir / "fsdd"


@pytest.fixture(scope="session")
def speech_file(train_dir: Path) -> Path:
    """One real 16 kHz utterance (a few seconds)."""
    return train_dir / "SPEAKER0001" / "000010053.flac"


@pytest.fixture(scope="session")
def small_model():
    """A small untrained LSTM d-vector SpeakerModel (fixed seed): enough for windowing and batching checks."""
    import torch

    from voxprint.config import load_config
    from voxprint.inference import SpeakerModel
    from voxprint.models import build_embedding_model

    torch.manual_seed(0)
    config = load_config(None, {"model": {"name": "lstm_dvector", "hidden_size": 32, "proj_size": 16,
                                          "num_layers": 2, "embedding_dim": 12}})
    return SpeakerModel(build_embedding_model(config), config)


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    """Two cores are shared by the test process and its subprocesses: one thread avoids oversubscription."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_subset_folder(source: Path, out: Path, speakers: int, utterances: int | None = None,
                       with_trials: bool = False) -> Path:
    """A small Kaldi data folder pointing (absolute paths) at real audio of the first ``speakers`` speakers."""
    from voxprint.data import read_data_folder

    folder = read_data_folder(source)
    out.mkdir(parents=True, exist_ok=True)
    chosen: list[str] = []
    for spk in folder.speakers[:speakers]:
        chosen.extend(folder.spk2utt[spk][:utterances])
    (out / "wav.scp").write_text("".join(f"{u} {folder.wav[u]}\n" for u in chosen))
    (out / "utt2spk").write_text("".join(f"{u} {folder.utt2spk[u]}\n" for u in chosen))
    if with_trials:
        lines = [f"{int(folder.utt2spk[a] == folder.utt2spk[b])} {a} {b}"
                 for i, a in enumerate(chosen) for b in chosen[i + 1:]]
        (out / "trials.txt").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_train_folder(tmp_path_factory, train_dir: Path) -> Path:
    """Eight real training speakers, all their utterances."""
    return make_subset_folder(train_dir, tmp_path_factory.mktemp("train8"), speakers=8)


@pytest.fixture(scope="session")
def tiny_run_factory(tmp_path_factory, tiny_train_folder: Path):
    """Makes a small LSTM run folder (one short epoch on 8 speakers); each name gets its own copy."""
    import shutil

    from voxprint.config import load_config
    from voxprint.training import train

    config = load_config(None, {
        "model": {"name": "lstm_dvector", "hidden_size": 32, "proj_size": 16, "num_layers": 2, "embedding_dim": 16},
        "data": {"train": str(tiny_train_folder), "speakers_per_batch": 4, "utterances_per_speaker": 3,
                 "batches_per_epoch": 4, "valid_batches": 1, "crop_frames": [60, 80]},
        "optim": {"epochs": 1, "lr": 0.05},
    })
    original = tmp_path_factory.mktemp("tiny_run") / "run"
    train(config, original, progress=False)

    def make(name: str) -> Path:
        copy = tmp_path_factory.mktemp(name) / "run"
        shutil.copytree(original, copy)
        return copy

    return make


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server (Debian's ``postgresql``, started on 127.0.0.1) for a module's tests; skipped when
    there is none, unless ``VOXPRINT_REQUIRE_POSTGRES=1`` (CI) makes that a failure."""
    from voxprint.errors import StoreError
    from voxprint.service.postgres import TemporaryPostgres

    try:
        server = TemporaryPostgres().start()
    except StoreError as exc:
        if os.environ.get("VOXPRINT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"VOXPRINT_REQUIRE_POSTGRES=1 but {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()
