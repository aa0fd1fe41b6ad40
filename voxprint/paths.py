"""Where the shared real-speech data lives. Override with the VOXPRINT_DATA environment variable."""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "VOXPRINT_DATA"
PACKAGE_DIR = Path(__file__).resolve().parent


def data_root() -> Path:
    """Root of the shared data sets (``speechocean762/``, ``fsdd/``...).

    Defaults to ``../shared/data`` beside the repository checkout.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (PACKAGE_DIR.parent.parent / "shared" / "data").resolve()
