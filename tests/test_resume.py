"""Resume: a run SIGKILLed mid-epoch resumes to exactly the weights, optimiser, plateau, RNG and history of
an uninterrupted run; a live run holds its folder's lock; a resume must continue the same run; the
model.pt a kill left behind is caught up; orphaned temporary files are removed."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from voxprint.config import load_config
from voxprint.errors import ConfigError
from voxprint.runs import hash_state, load_torch_file
from voxprint.runs.lock import RunFolderBusy
from voxprint.training import train
from voxprint.training.checkpoint import RESUMABLE_KEYS, config_changes
from conftest import make_subset_folder

REPO = Path(__file__).resolve().parent.parent


def resume_config(data: Path, **optim) -> dict:
    # SpecAugment draws from torch's generator, so a resume that loses the RNG state trains on other
    # masks. At lr 0.05 this tiny model stops improving after epoch 2 (checked in the test), so the
    # plateau halves the LR before the interruption and flags the epochs after it as not best.
    return load_config(None, {
        "seed": 7,
        "model": {"name": "lstm_dvector", "hidden_size": 32, "proj_size": 16, "num_layers": 1, "embedding_dim": 16},
        "data": {"train": str(data), "speakers_per_batch": 4, "utterances_per_speaker": 3,
                 "batches_per_epoch": 3, "valid_batches": 1, "crop_frames": [40, 60]},
        "specaugment": {"time_masks": 1, "max_time_width": 5, "freq_masks": 1, "max_freq_width": 4},
        "optim": {"epochs": 5, "lr": 0.05, "lr_patience": 1, "early_stop_patience": 10, **optim},
    })


@pytest.fixture(scope="module")
def ten_speakers(tmp_path_factory, train_dir):
    return make_subset_folder(train_dir, tmp_path_factory.mktemp("ten"), speakers=10)


# Trains CONFIG into OUT and, two steps into epoch KILL_EPOCH (counted from 0), creates MARKER and
# waits to be killed: the weights and the RNG have then moved past the last checkpoint.
KILLABLE_TRAINING = """
import sys, time, torch, yaml
torch.set_num_threads(1)
import voxprint.training.trainer as trainer
config_path, out, kill_epoch, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
position = {"epoch": -1, "steps": 0}
run_epoch, train_step = trainer.run_epoch, trainer.train_step

def watched_run_epoch(run, epoch, progress=False):
    position.update(epoch=epoch, steps=0)
    return run_epoch(run, epoch, progress)

def watched_train_step(*args, **kwargs):
    loss = train_step(*args, **kwargs)
    position["steps"] += 1
    if position["epoch"] == kill_epoch and position["steps"] == 2:
        open(marker, "w").close()
        time.sleep(600)
    return loss

trainer.run_epoch, trainer.train_step = watched_run_epoch, watched_train_step
trainer.train(yaml.safe_load(open(config_path)), out, progress=False)
"""


def _assert_same(a, b, where="checkpoint"):
    """Equal tensor for tensor (exactly), and equal as plain data everywhere else."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_sigkilled_run_resumes_exactly_and_holds_its_lock_while_alive(ten_speakers, tmp_path):
    config = resume_config(ten_speakers)
    straight = train(config, tmp_path / "straight", progress=False)
    history = straight.history
    # The test means something only if the LR was halved before the kill (epoch 3) and the epoch
    # after the kill does not improve (a forgotten plateau would call it a new best).
    assert history[3]["lr"] < config["optim"]["lr"] and not history[3]["best"], _without_seconds(history)
    assert not history[4]["best"] and history[4]["lr"] < history[3]["lr"], _without_seconds(history)

    run = tmp_path / "killed"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    marker = tmp_path / "inside-epoch-4"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_TRAINING, str(config_path), str(run), "3", str(marker)],
                            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the training process never reached epoch 4"
            time.sleep(0.05)
        assert load_torch_file(run / "checkpoint.pt")["epoch"] == 2  # epochs 1-3 saved, 4 under way
        with pytest.raises(RunFolderBusy) as busy:
            train(config, run, resume=True, progress=False)
        message = str(busy.value)
        assert f"in use by train (pid {proc.pid} " in message and "\n" not in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    resumed = train(config, run, resume=True, progress=False)  # the kernel released the dead run's lock
    assert _without_seconds(resumed.history) == _without_seconds(straight.history)
    a, b = load_torch_file(tmp_path / "straight" / "checkpoint.pt"), load_torch_file(run / "checkpoint.pt")
    a["history"], b["history"] = _without_seconds(a["history"]), _without_seconds(b["history"])
    _assert_same(a, b)  # weights, optimiser state, plateau, torch RNG, history, config
    _assert_same(load_torch_file(tmp_path / "straight" / "model.pt")["state_dict"],
                 load_torch_file(run / "model.pt")["state_dict"], "model.pt")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, ten_speakers):
    """A finished 1-epoch run; tests copy it before changing anything."""
    config = resume_config(ten_speakers, epochs=1)
    out = tmp_path_factory.mktemp("finished") / "run"
    train(config, out, progress=False)
    return config, out


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_resume_refuses_a_changed_config_whose_weights_still_fit(finished_run, tmp_path):
    """Only the seed changes: the checkpoint still loads, so only the config check can refuse it."""
    config, original = finished_run
    run = _copy(original, tmp_path / "run")
    other = resume_config(config["data"]["train"], epochs=2)
    other["seed"] = 8
    with pytest.raises(ConfigError, match="seed: 7 -> 8"):
        train(other, run, resume=True, progress=False)


def test_resume_refuses_another_run_before_touching_the_folder(finished_run, tmp_path):
    config, original = finished_run
    run = _copy(original, tmp_path / "run")
    orphan = run / f".checkpoint.pt.{int(Path('/proc/sys/kernel/pid_max').read_text()) + 1}.0a1b2c3d.tmp"
    orphan.write_bytes(b"half")
    before = _snapshot(run)

    with pytest.raises(ConfigError, match="--resume"):
        train(config, run, progress=False)
    other = resume_config(config["data"]["train"], epochs=1)
    other["model"]["hidden_size"] = 40
    other["seed"] = 8
    other["specaugment"]["time_masks"] = 2
    other["data"]["num_workers"] = 1  # allowed: not listed
    with pytest.raises(ConfigError) as refused:
        train(other, run, resume=True, progress=False)
    message = str(refused.value)
    assert "\n" not in message
    assert "model.hidden_size: 32 -> 40; seed: 7 -> 8; specaugment.time_masks: 1 -> 2 (" in message
    assert "num_workers" not in message.split("(")[0]
    cosine = resume_config(config["data"]["train"], epochs=3, schedule="cosine")
    with pytest.raises(ConfigError, match=r"optim.epochs: 1 -> 3 \(the cosine schedule spans optim.epochs\)"):
        train(cosine, run, resume=True, progress=False)
    assert _snapshot(run) == before  # config.yaml, checkpoint, model, history and the orphan untouched

    longer = resume_config(config["data"]["train"], epochs=2, early_stop_patience=4)
    result = train(longer, run, resume=True, progress=False)
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert not orphan.exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"] == 2
    assert load_torch_file(run / "checkpoint.pt")["config"]["optim"]["early_stop_patience"] == 4


def test_resumable_keys_are_the_safe_ones():
    base = resume_config(Path("/data"))
    changed = resume_config(Path("/data"), epochs=9, early_stop_patience=2)
    changed["data"]["num_workers"] = 4
    changed["inference"]["overlap"] = 0.25
    changed["description"] = "a note for the study runner"
    assert config_changes(base, changed) == []
    assert RESUMABLE_KEYS == {"optim.epochs", "optim.early_stop_patience", "data.num_workers"}
    for section, key, value in [("data", "valid_fraction", 0.3), ("data", "train", "/other"), ("loss", "name", "te2e"),
                                ("features", "n_mels", 64), ("optim", "lr", 0.1), ("optim", "lr_patience", 3)]:
        other = resume_config(Path("/data"))
        other[section][key] = value
        assert config_changes(base, other) == [f"{section}.{key}: {base[section][key]!r} -> {value!r}"]
    decreasing = resume_config(Path("/data"))
    decreasing["regularizer"] = {"kind": "so", "schedule": "decreasing"}
    longer = resume_config(Path("/data"), epochs=9)
    longer["regularizer"] = dict(decreasing["regularizer"])
    assert config_changes(decreasing, longer) == [
        "optim.epochs: 5 -> 9 (the regularizer's decreasing schedule is scaled to optim.epochs)"]


def test_model_file_a_kill_left_behind_is_caught_up_on_resume(ten_speakers, tmp_path, monkeypatch):
    # Without validation every epoch is saved to model.pt; keep epoch 1's to fake a kill that fell
    # between epoch 2's checkpoint and its model.pt.
    config = resume_config(ten_speakers, epochs=2)
    config["data"]["valid_fraction"] = 0.0
    run = tmp_path / "run"
    committed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (committed.append(Path(dst).name), real_replace(src, dst)))

    def keep_epoch_one(epoch, record):
        if epoch == 0:
            shutil.copy(run / "model.pt", tmp_path / "model-epoch1.pt")

    train(config, run, progress=False, on_epoch_end=keep_epoch_one)
    # The checkpoint is committed before model.pt, so a kill between them leaves model.pt behind, never ahead.
    assert committed == ["config.yaml"] + ["checkpoint.pt", "model.pt", "history.json"] * 2
    final = load_torch_file(run / "model.pt")
    shutil.copy(tmp_path / "model-epoch1.pt", run / "model.pt")
    assert load_torch_file(run / "model.pt")["trained"]["epoch"] == 1

    train(config, run, resume=True, progress=False)
    repaired = load_torch_file(run / "model.pt")
    assert repaired["trained"] == final["trained"] and repaired["trained"]["epoch"] == 2
    _assert_same(repaired["state_dict"], final["state_dict"], "model.pt")
    assert repaired["weights_sha256"] == final["weights_sha256"] == hash_state(repaired["config"],
                                                                              repaired["state_dict"])
