"""Training on ~10 real speakers: the loss falls, every configured feature is applied, bad data or config
fail before the run folder exists, DDP with 2 processes (resume: tests/test_resume.py)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from voxprint.config import load_config, merge
from voxprint.errors import AudioError, ConfigError, DataError, ModelError
from voxprint.models import build_embedding_model
from voxprint.runs import hash_state, load_torch_file
from voxprint.training import train
from voxprint.training.trainer import validation_metrics
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
    # Both files load as plain data (weights_only=True); model.pt carries the hash inference checks.
    saved = load_torch_file(tmp_path / "run" / "model.pt")
    assert saved["trained"]["valid_loss"] == pytest.approx(min(losses[1:]))
    assert saved["weights_sha256"] == hash_state(saved["config"], saved["state_dict"])
    config_yaml = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["config"] == load_torch_file(tmp_path / "run" / "checkpoint.pt")["config"] == config_yaml
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history
    # 2 batches of 5 speakers x 3 crops hold same- and different-speaker pairs, so every epoch has an EER
    # (its value is checked against a hand-made reference in test_validation_eer_scores_distinct_pairs_only).
    assert all(isinstance(r["valid_eer"], float) for r in result.history)


def test_selection_by_validation_eer(ten_speakers, tmp_path):
    config = tiny_config(ten_speakers)
    config["optim"]["select_by"] = "valid_eer"
    result = train(config, tmp_path / "run", progress=False)
    eers = [r["valid_eer"] for r in result.history]
    assert result.best_valid == pytest.approx(min(eers[1:]))
    # An epoch is "best" when its EER beats every earlier trained epoch's (epoch 0 does not count).
    assert [r["best"] for r in result.history[1:]] == [e < min(eers[1:i], default=math.inf) - 1e-6
                                                       for i, e in enumerate(eers[1:], 1)]
    saved = load_torch_file(tmp_path / "run" / "model.pt")
    assert saved["trained"] == [r for r in result.history if r["best"]][-1]


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


def test_lr_halves_on_plateau_and_early_stopping(ten_speakers, tmp_path):
    # lr 0 cannot improve the validation loss after epoch 1, so the schedule must react.
    config = tiny_config(ten_speakers, epochs=10, lr=0.0, lr_patience=1, early_stop_patience=3)
    config["optim"]["min_lr"] = 0.0
    result = train(config, tmp_path / "flat", progress=False)
    epochs = [r for r in result.history if r["epoch"] > 0]
    assert len(epochs) == 4 and epochs[-1]["stop"]
    # A resume with more patience continues the stopped run until the new patience runs out.
    config["optim"]["early_stop_patience"] = 5
    more = train(config, tmp_path / "flat", resume=True, progress=False)
    assert [r["epoch"] for r in more.history] == list(range(7)) and more.history[-1]["stop"]
    assert [r["stop"] for r in more.history[1:]] == [False] * 3 + [True, False, True]


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
    head = load_torch_file(tmp_path / "ecapa" / "checkpoint.pt")["step"]["loss.weight"]
    assert head.shape == (30, 32)  # 10 speakers x (original + 2 speeds)


# --- what train() must check before it creates the run folder ------------------------------------------

def _folder_with_bad_files(source: Path, out: Path) -> Path:
    """``source``'s utterances plus three undecodable files of its first speaker."""
    out.mkdir()
    (out / "junk.wav").write_bytes(b"this is not audio")
    (out / "empty.flac").write_bytes(b"")
    sf.write(out / "no_samples.wav", torch.zeros(0).numpy(), 16000)  # a valid header, no audio
    speaker = (source / "utt2spk").read_text().split()[1]
    bad = ["zz_junk", "zz_empty", "zz_no_samples"]
    names = ["junk.wav", "empty.flac", "no_samples.wav"]
    (out / "wav.scp").write_text((source / "wav.scp").read_text()
                                 + "".join(f"{u} {out / n}\n" for u, n in zip(bad, names)))
    (out / "utt2spk").write_text((source / "utt2spk").read_text() + "".join(f"{u} {speaker}\n" for u in bad))
    return out


def test_bad_audio_fails_before_the_run_folder_exists(ten_speakers, tmp_path):
    bad = _folder_with_bad_files(ten_speakers, tmp_path / "bad")
    total = len((bad / "wav.scp").read_text().splitlines())
    out = tmp_path / "runs" / "run"
    with pytest.raises(AudioError) as error:
        train(tiny_config(bad), out, progress=False)
    message = str(error.value)
    assert "\n" not in message and f"3 of {total} audio files of data.train {bad} cannot be used" in message
    assert "zz_empty (audio file" in message and "empty.flac is empty (0 bytes)" in message
    assert "zz_junk (cannot decode audio file" in message and "junk.wav" in message
    assert "zz_no_samples (audio file" in message and "contains no audio samples" in message
    assert not out.parent.exists()

    sources = tiny_config(ten_speakers)
    sources["data"]["sources"] = [{"train": str(bad), "weight": 0.5}]
    with pytest.raises(AudioError, match=f"3 of {total} audio files of data.sources {bad} cannot"):
        train(sources, out, progress=False)
    assert not out.parent.exists()


@pytest.mark.parametrize("change, error, match", [
    ({"regularizer": {"kind": "so", "layer_names": ["encoder.nope"]}}, ConfigError, "'encoder.nope' not found"),
    ({"init_from": "/nonexistent/run"}, ConfigError, "init_from /nonexistent/run: no checkpoint.pt"),
    ({"data": {"valid_fraction": 0.01}}, ConfigError, "valid_fraction"),
    ({"data": {"sources": [{"train": "/nonexistent/data"}]}}, DataError, "does not exist"),
    ({"loss": {"name": "nope"}}, ConfigError, "nope"),
], ids=["regularizer-layer", "init-from", "validation", "source-folder", "loss"])
def test_bad_config_fails_before_the_run_folder_exists(ten_speakers, tmp_path, change, error, match):
    out = tmp_path / "runs" / "run"
    with pytest.raises(error, match=match):
        train(merge(tiny_config(ten_speakers), change), out, progress=False)
    assert not out.parent.exists()


def test_init_from_a_checkpoint_holding_python_objects_is_refused(ten_speakers, tmp_path):
    (tmp_path / "evil").mkdir()
    torch.save({"step": {}, "payload": Path("x")}, tmp_path / "evil" / "checkpoint.pt")  # a pickled object
    config = merge(tiny_config(ten_speakers), {"init_from": str(tmp_path / "evil")})
    with pytest.raises(ModelError, match="holds Python objects"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --- every configured training feature is applied ------------------------------------------------------

def feature_config(data: Path, **sections) -> dict:
    """One epoch of two batches without validation: enough steps for any feature to show in the weights."""
    return merge(load_config(None, {
        "seed": 5,
        "model": {"name": "lstm_dvector", "hidden_size": 24, "proj_size": 12, "num_layers": 1, "embedding_dim": 8},
        "data": {"train": str(data), "speakers_per_batch": 4, "utterances_per_speaker": 2, "batches_per_epoch": 2,
                 "valid_fraction": 0.0, "crop_frames": [40, 50]},
        "optim": {"epochs": 1, "lr": 0.05},
    }), sections)


def trained_step(config: dict, out: Path) -> dict[str, torch.Tensor]:
    """The trained weights of model and loss (the checkpoint's step state)."""
    train(config, out, progress=False)
    return load_torch_file(out / "checkpoint.pt")["step"]


@pytest.fixture(scope="module")
def baseline_step(tiny_train_folder, tmp_path_factory):
    return trained_step(feature_config(tiny_train_folder), tmp_path_factory.mktemp("baseline") / "run")


def test_gradient_clipping_bounds_every_step(tiny_train_folder, baseline_step, tmp_path):
    clip, lr, momentum, steps = 1e-3, 0.05, 0.9, 2
    clipped = trained_step(feature_config(tiny_train_folder, optim={"clip_grad_norm": clip}), tmp_path / "run")
    torch.manual_seed(5)
    initial = build_embedding_model(feature_config(tiny_train_folder)).state_dict()

    def distance(step):
        return math.sqrt(sum(float(((step[f"model.{k}"] - v) ** 2).sum()) for k, v in initial.items()))

    # SGD with momentum moves at most lr * |velocity| <= lr * clip / (1 - momentum) per step.
    bound = steps * lr * clip / (1 - momentum)
    assert distance(clipped) <= bound < distance(baseline_step) / 10


def test_loss_lr_scale_scales_the_loss_parameters_steps(tiny_train_folder, baseline_step, tmp_path):
    frozen = trained_step(feature_config(tiny_train_folder, optim={"loss_lr_scale": 0.0}), tmp_path / "run")
    assert (float(frozen["loss.weight"]), float(frozen["loss.bias"])) == (10.0, -5.0)  # GE2E's initial w, b
    assert float(baseline_step["loss.weight"]) != 10.0  # at the default 0.01 it moves (b has no gradient:
    # the softmax variant is invariant to a shared offset)
    assert any(not torch.equal(frozen[k], baseline_step[k]) for k in frozen if k.startswith("model."))


@pytest.mark.parametrize("section", [
    {"specaugment": {"time_masks": 1, "max_time_width": 5, "freq_masks": 1, "max_freq_width": 4}},
    {"augment": {"noise_prob": 1.0, "snr_low": 5, "snr_high": 10}},
], ids=["specaugment", "waveform-augmentation"])
def test_augmentation_changes_what_is_trained(tiny_train_folder, baseline_step, tmp_path, section):
    augmented = trained_step(feature_config(tiny_train_folder, **section), tmp_path / "run")
    assert augmented.keys() == baseline_step.keys()
    assert all(not torch.equal(augmented[k], baseline_step[k]) for k in augmented if "weight" in k)


# --- validation --------------------------------------------------------------------------------------

class FixedBatches(list):
    """A validation sampler: fixed batches of dataset indices, with the N of its GE2E batches."""

    n_speakers = 2


class Embedder(torch.nn.Module):
    """Stands in for the step module: the 'audio' is already the embedding, the loss is 0."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Identity()

    def loss(self, embeddings, n_speakers, labels):
        return torch.zeros(())


def test_validation_eer_scores_distinct_pairs_only():
    # Speaker 0 is [1, 0] and [-1, 0], speaker 1 is [0, 1] and [0, -1]: both target pairs score -1, the
    # four non-target pairs 0, so the EER is 1. Pairing each crop with itself would add four targets
    # scoring 1 and report 1/3.
    crops = {0: ([1.0, 0.0], 0), 1: ([-1.0, 0.0], 0), 2: ([0.0, 1.0], 1), 3: ([0.0, -1.0], 1)}
    dataset = {i: (torch.tensor(vector), label) for i, (vector, label) in crops.items()}
    metrics = validation_metrics(Embedder(), dataset, FixedBatches([[0, 1], [2, 3]]), torch.device("cpu"))
    assert metrics == {"valid_loss": 0.0, "valid_eer": 1.0}
    one_speaker = {i: (torch.tensor(vector), 0) for i, (vector, _) in crops.items()}
    assert "valid_eer" not in validation_metrics(Embedder(), one_speaker, FixedBatches([[0, 1, 2, 3]]),
                                                 torch.device("cpu"))
