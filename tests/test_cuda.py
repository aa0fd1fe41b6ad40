"""Every verb that runs a model gives on a GPU what it gives on the CPU (``--device cuda``).

Skipped where torch sees no CUDA device (CI has none); a GPU machine runs these with ``bench/cuda.py``,
which also measures the bundled models there. They once caught the EM models computing in numpy on CUDA
buffers.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voxprint.cli import main
from voxprint.data.embeddings import load_embeddings
from voxprint.inference import load_model
from voxprint.runs import BUILTIN_MODELS
from conftest import make_subset_folder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def dev_subset(tmp_path_factory, dev_dir) -> Path:
    return make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev"), speakers=4, utterances=4)


def json_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_bundled_models_embed_on_a_gpu_as_on_the_cpu(name, dev_dir):
    """The EM models compute in numpy: on a GPU their buffers must come back to the host (they once raised)."""
    files = sorted((dev_dir / "SPEAKER5017").glob("*.flac"))[:3]
    on_cpu = load_model(name).extract_embeddings(files)
    on_gpu = load_model(name, device="cuda").extract_embeddings(files)
    assert np.sum(on_cpu * on_gpu, axis=1).min() > 0.9999


@pytest.mark.parametrize("model", ["default", "fused"])
def test_embed_with_decode_workers_matches_the_cpu(model, dev_subset, tmp_path):
    outputs = {}
    for device in ("cpu", "cuda"):
        outputs[device] = tmp_path / f"{device}.npz"
        assert main(["embed", "--data", str(dev_subset), "--out", str(outputs[device]), "--model", model,
                     "--device", device, "--decode-workers", "2", "--quiet"]) == 0
    (cpu_ids, cpu), (gpu_ids, gpu) = load_embeddings(outputs["cpu"]), load_embeddings(outputs["cuda"])
    assert cpu_ids == gpu_ids and np.sum(cpu * gpu, axis=1).min() > 0.9999


def test_store_enroll_identify_and_verify_match_the_cpu(capsys, dev_subset, dev_dir, tmp_path):
    speakers = sorted(p.name for p in dev_dir.iterdir() if p.is_dir())[:4]
    results = {}
    for device in ("cpu", "cuda"):
        store = tmp_path / f"{device}.db"
        for speaker in speakers[:3]:
            files = [str(f) for f in sorted((dev_dir / speaker).glob("*.flac"))[:3]]
            assert main(["enroll", "--store", str(store), "--speaker", speaker, *files, "--device", device,
                         "--quiet"]) == 0
        tests = [str(sorted((dev_dir / s).glob("*.flac"))[-1]) for s in speakers]
        capsys.readouterr()
        assert main(["identify", "--store", str(store), *tests, "--json", "--device", device]) == 0
        found = json_lines(capsys)
        main(["verify", "--store", str(store), "--speaker", speakers[0], "--test", tests[0], "--json",
              "--device", device])
        results[device] = (found, json_lines(capsys))
    (cpu_found, cpu_verify), (gpu_found, gpu_verify) = results["cpu"], results["cuda"]
    assert [r["speaker"] for r in gpu_found] == [r["speaker"] for r in cpu_found]
    assert [r["top"][0]["speaker"] for r in cpu_found][:3] == speakers[:3]  # the search itself works
    # LLRs agree to 0.01 (cuDNN's convolutions round differently from the CPU's: about 0.002 was seen on an H200).
    assert np.allclose([r["score"] for r in gpu_found], [r["score"] for r in cpu_found], rtol=0, atol=0.01)
    assert gpu_verify[0]["score"] == pytest.approx(cpu_verify[0]["score"], abs=0.01)


def test_diarize_matches_the_cpu(capsys, data_dir):
    sample = data_dir / "pyannote-sample" / "sample.wav"
    outputs = {}
    for device in ("cpu", "cuda"):
        assert main(["diarize", str(sample), "--num-speakers", "2", "--json", "--device", device]) == 0
        outputs[device] = json_lines(capsys)
    assert outputs["cuda"] == outputs["cpu"]
