"""The run folder: safe loading, integrity, one-line errors, locks, and inference without training code."""
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from voxprint.errors import ModelError
from voxprint.inference import load_model
from voxprint.runs import BUILTIN_MODELS, META_FILE, MODEL_FILE, RunLock, hash_state, load_torch_file, read_meta
from voxprint.runs.lock import RunFolderBusy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def default_copy(tmp_path) -> Path:
    """A writable copy of the bundled model's folder."""
    return Path(shutil.copytree(BUILTIN_MODELS["default"], tmp_path / "default"))


def test_importing_inference_loads_no_training_code():
    code = ("import sys, voxprint.inference, voxprint.runs; "
            "print(sorted(m for m in sys.modules if m.startswith('voxprint.training') "
            "or m in ('voxprint.data.augment', 'voxprint.losses')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_model_file_holding_code_is_refused_and_the_code_never_runs(default_copy, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = torch.load(default_copy / MODEL_FILE, weights_only=True)
    state["trained"] = Payload()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (default_copy / MODEL_FILE).write_bytes(buffer.getvalue())
    with pytest.raises(ModelError, match="refused: it holds Python objects") as info:
        load_model(default_copy)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def _flip_a_weight_byte(path: Path) -> None:
    """Change one byte inside the largest tensor's storage of a torch zip file (the CRC is not fixed)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        largest = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        offset = largest.header_offset + 30 + len(largest.filename.encode()) + len(largest.extra)
    raw = bytearray(path.read_bytes())
    raw[offset + largest.file_size // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_bit_flipped_weights_are_refused(default_copy):
    _flip_a_weight_byte(default_copy / MODEL_FILE)
    with pytest.raises(ModelError, match="corrupt: its weights do not match"):
        load_model(default_copy)


def test_the_bundled_model_carries_its_hash_and_an_identity():
    state = load_torch_file(BUILTIN_MODELS["default"] / MODEL_FILE)
    assert state["weights_sha256"] == hash_state(state["config"], state["state_dict"])
    model = load_model("default")
    assert model.identity.startswith("vp1-") and model.identity == load_model("default").identity


@pytest.mark.parametrize("meta_text,needle", [
    ("{not json", "not readable JSON"),
    ('{"threshold": "high"}', "threshold must be a finite number"),
    ('{"threshold": 0.5, "backend": {"kind": 3}}', "backend.kind"),
    ("[1, 2]", "must hold a JSON object"),
])
def test_a_bad_meta_json_is_one_line(default_copy, meta_text, needle):
    (default_copy / META_FILE).write_text(meta_text)
    with pytest.raises(ModelError, match=needle) as info:
        load_model(default_copy)
    assert "\n" not in str(info.value)


def test_weights_that_do_not_fit_the_config_are_one_line(default_copy):
    state = torch.load(default_copy / MODEL_FILE, weights_only=True)
    state["config"]["model"]["channels"] = 64  # the weights are for C=192
    state["weights_sha256"] = hash_state(state["config"], state["state_dict"])
    torch.save(state, default_copy / MODEL_FILE)
    with pytest.raises(ModelError, match="do not fit the model") as info:
        load_model(default_copy)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("payload", [b"", b"PK\x03\x04 truncated zip", b"not a model at all"])
def test_truncated_or_foreign_files_are_one_line(tmp_path, payload):
    (tmp_path / MODEL_FILE).write_bytes(payload)
    with pytest.raises(ModelError) as info:
        load_model(tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path / MODEL_FILE) in str(info.value)


def test_read_meta_of_a_folder_without_one_is_empty(tmp_path):
    assert read_meta(tmp_path) == {}


def test_a_second_process_cannot_take_the_lock_and_learns_who_holds_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from voxprint.runs import RunLock
        with RunLock({str(tmp_path)!r}, "train"):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"in use by train \\(pid {holder.pid}"):
            RunLock(tmp_path, "fit-backend").acquire()
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the killed holder's lock: no stale lock remains.
    with RunLock(tmp_path, "fit-backend"):
        assert json.loads((tmp_path / ".lock").read_text())["purpose"] == "fit-backend"


def test_unknown_or_missing_devices_are_one_line_errors():
    from voxprint.inference import resolve_device

    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no usable CUDA"):
            load_model("default", device="cuda")

