"""Shared fixtures: small slices of the real speech in ../shared/data (override with VOXPRINT_DATA)."""
from __future__ import annotations

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
