"""MultiReader (GE2E paper, section 2.3): one batch per data source per step, loss = sum_k alpha_k * loss_k."""
from types import SimpleNamespace

import pytest
import torch

from voxprint.config import load_config
from voxprint.errors import ConfigError
from voxprint.runs import load_torch_file
from voxprint.training import train
from voxprint.training.trainer import train_step
from conftest import make_subset_folder


class ScaledSum(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, waves, labels, n_speakers):
        return self.scale * waves.sum() * n_speakers


def test_step_loss_and_gradient_are_the_weighted_sum():
    runner = ScaledSum()
    sources = [SimpleNamespace(weight=1.0, sampler=SimpleNamespace(n_speakers=2)),
               SimpleNamespace(weight=0.25, sampler=SimpleNamespace(n_speakers=3))]
    batches = ((torch.full((2, 3), 1.0), torch.zeros(2)), (torch.full((4, 2), 2.0), torch.zeros(4)))
    regularizer = 0.5 * runner.scale ** 2
    total = train_step(runner, sources, batches, torch.device("cpu"), False, regularizer)
    # losses: 1.0 * 2 * 6 * 2 = 24, 0.25 * 2 * 16 * 3 = 24, regulariser 0.5 * 4 = 2
    assert total == pytest.approx(50.0)
    # d/dscale: 1.0 * 6 * 2 + 0.25 * 16 * 3 + 0.5 * 2 * 2 = 12 + 12 + 2
    assert float(runner.scale.grad) == pytest.approx(26.0)


def multireader_config(so_dir, fsdd_subset, loss="ge2e"):
    return load_config(None, {
        "seed": 3,
        "model": {"name": "lstm_dvector", "hidden_size": 48, "proj_size": 24, "num_layers": 2, "embedding_dim": 16},
        "loss": {"name": loss},
        "data": {"train": str(so_dir), "speakers_per_batch": 5, "utterances_per_speaker": 3, "batches_per_epoch": 6,
                 "valid_batches": 2, "crop_frames": [60, 80],
                 "sources": [{"train": str(fsdd_subset), "weight": 0.5, "speakers_per_batch": 4,
                              "crop_frames": [40, 50]}]},
        "optim": {"epochs": 2, "lr": 0.05},
    })


@pytest.fixture(scope="module")
def folders(tmp_path_factory, train_dir, fsdd_dir):
    so = make_subset_folder(train_dir, tmp_path_factory.mktemp("so"), speakers=8)
    fsdd = make_subset_folder(fsdd_dir, tmp_path_factory.mktemp("fsdd"), speakers=6, utterances=40)
    return so, fsdd


def test_text_independent_plus_digit_passwords_trains(folders, tmp_path):
    result = train(multireader_config(*folders), tmp_path / "run", progress=False)
    losses = [r["valid_loss"] for r in result.history]
    assert min(losses[1:]) < losses[0], losses


def test_multireader_rejects_classification_losses(folders, tmp_path):
    with pytest.raises(ConfigError, match="MultiReader"):
        train(multireader_config(*folders, loss="softmax"), tmp_path / "run", progress=False)


def test_train_steps_on_every_source_with_its_weight(folders, tmp_path):
    def trained_step(weight: float | None, name: str) -> dict[str, torch.Tensor]:
        config = multireader_config(*folders)
        config["data"].update(batches_per_epoch=2, valid_fraction=0.0)
        config["optim"]["epochs"] = 1
        if weight is None:
            config["data"]["sources"] = []
        else:
            config["data"]["sources"][0]["weight"] = weight
        train(config, tmp_path / name, progress=False)
        return load_torch_file(tmp_path / name / "checkpoint.pt")["step"]

    alone, silent, weighted = trained_step(None, "alone"), trained_step(0.0, "silent"), trained_step(0.5, "weighted")
    # A zero-weight source adds nothing; a weighted one changes every weight of the model.
    assert all(torch.equal(alone[k], silent[k]) for k in alone)
    assert all(not torch.equal(alone[k], weighted[k]) for k in alone if k.startswith("model.") and "weight" in k)
