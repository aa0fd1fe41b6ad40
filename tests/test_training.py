"""Training on ~10 real speakers: the loss falls, resume equals an uninterrupted run, DDP with 2 processes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voxprint.config import load_config
from voxprint.errors import ConfigError
from voxprint.models import build_embedding_model
from voxprint.training import train
from conftest import make_subset_folder

REPO = Path(__file__).resolve().parent.parent


def tiny_config(data: Path, epochs: int = 2, **optim) -> dict:
    return load_config(None, {
        "seed": 7,
        "model": {"name": "lstm_dvector", "hidden_size": 48, "proj_size": 24, "num_layers": 2, "embedding_dim": 16},
        "data": {"train": str(data), "speakers_per_batch": 5, "utterances_per_speaker": 3,
                 "batches_per_epoch": 6, "valid_batches": 2, "crop_frames": [60, 80]},
        "optim": {"epochs": epochs, "lr": 0.05, **optim},
    })


@pytest.fixture(scope="module")
def ten_speakers(tmp_path_factory, train_dir):
    return make_subset_folder(train_dir, tmp_path_factory.mktemp("ten"), speakers=10)


def test_two_epochs_lower_the_ge2e_loss(ten_speakers, tmp_path):
    result = train(tiny_config(ten_speakers), tmp_path / "run", progress=False)
    losses = [r["valid_loss"] for r in result.history]
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert min(losses[1:]) < losses[0] - 0.05, losses
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert saved["trained"]["valid_loss"] == pytest.approx(min(losses[1:]))
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history
    assert all(0.0 <= r["valid_eer"] <= 1.0 for r in result.history)


def test_selection_by_validation_eer(ten_speakers, tmp_path):
    config = tiny_config(ten_speakers)
    config["optim"]["select_by"] = "valid_eer"
    result = train(config, tmp_path / "run", progress=False)
    eers = [r["valid_eer"] for r in result.history]
    assert result.best_valid == pytest.approx(min(eers[1:])) if min(eers[1:]) < eers[0] else True
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert saved["trained"]["valid_eer"] == pytest.approx(min(eers[1:]))


def test_init_from_starts_where_the_previous_run_ended(ten_speakers, tmp_path):
    first = train(tiny_config(ten_speakers, epochs=1), tmp_path / "warmup", progress=False)
    config = tiny_config(ten_speakers, epochs=1, lr=0.0)
    config["init_from"] = str(tmp_path / "warmup")
    config["loss"] = {"name": "am_softmax", "margin": 0.3, "scale": 20.0}
    second = train(config, tmp_path / "finetune", progress=False)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    wrong = tiny_config(ten_speakers, epochs=1)
    wrong["init_from"] = str(tmp_path / "warmup")
    wrong["model"]["hidden_size"] = 40
    with pytest.raises(ConfigError, match="model differs"):
        train(wrong, tmp_path / "wrong", progress=False)


class Interrupt(Exception):
    pass


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(ten_speakers, tmp_path):
    config = tiny_config(ten_speakers, epochs=3)
    straight = train(config, tmp_path / "straight", progress=False)

    def kill_after_first_epoch(epoch, record):
        if epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tmp_path / "resumed", progress=False, on_epoch_end=kill_after_first_epoch)
    with pytest.raises(ConfigError, match="--resume"):
        train(config, tmp_path / "resumed", progress=False)
    resumed = train(config, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.history == [dict(r, seconds=r2["seconds"]) for r, r2 in zip(straight.history, resumed.history)]
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["step"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_lr_halves_on_plateau_and_early_stopping(ten_speakers, tmp_path):
    # lr 0 cannot improve the validation loss after epoch 1, so the schedule must react.
    config = tiny_config(ten_speakers, epochs=10, lr=0.0, lr_patience=1, early_stop_patience=3)
    config["optim"]["min_lr"] = 0.0
    result = train(config, tmp_path / "flat", progress=False)
    epochs = [r for r in result.history if r["epoch"] > 0]
    assert len(epochs) == 4 and epochs[-1]["stop"]


DDP_WORKER = """
import sys, torch, yaml
from voxprint.training import train
config = yaml.safe_load(open(sys.argv[1]))
result = train(config, sys.argv[2], progress=False)
import os
rank = int(os.environ["RANK"])
torch.save(result.model.state_dict(), f"{sys.argv[3]}{rank}.pt")
"""


def test_ddp_two_processes_gloo(ten_speakers, tmp_path):
    import yaml

    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(ten_speakers, epochs=1)))
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
         str(config_path), str(out), str(tmp_path / "rank")],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.pt").is_file() and (out / "checkpoint.pt").is_file()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(7)
    untrained = build_embedding_model(tiny_config(ten_speakers)).state_dict()
    for key in ranks[0]:
        # DDP averages gradients, so both replicas take identical steps away from the shared init.
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between ranks"
    assert all(not torch.equal(ranks[0][k], untrained[k]) for k in untrained if "weight" in k)
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]


def test_short_ecapa_run_with_aam_and_augmentation_lowers_the_loss(ten_speakers, tmp_path):
    config = tiny_config(ten_speakers, epochs=3, name="adam", lr=0.005)
    config["features"]["n_mels"] = 40
    config["model"] = {"name": "ecapa_tdnn", "channels": 32, "embedding_dim": 32, "scale": 4,
                       "se_bottleneck": 16, "attention_dim": 16}
    config["loss"] = {"name": "aam_softmax", "margin": 0.1, "scale": 15.0}
    config["augment"] = {"noise_prob": 0.5, "snr_low": 10, "snr_high": 20, "speed_prob": 0.3,
                         "speed_as_new_speakers": True}
    config["specaugment"] = {"time_masks": 1, "max_time_width": 5, "freq_masks": 1, "max_freq_width": 4}
    config["data"]["batches_per_epoch"] = 8
    result = train(config, tmp_path / "ecapa", progress=False)
    losses = [r["valid_loss"] for r in result.history]
    assert min(losses[1:]) < losses[0] - 0.1, losses
    head = torch.load(tmp_path / "ecapa" / "checkpoint.pt", weights_only=False)["step"]["loss.weight"]
    assert head.shape == (30, 32)  # 10 speakers x (original + 2 speeds)
