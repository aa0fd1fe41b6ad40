"""The bundled default model on unseen (dev) speakers: the package's main job."""
import numpy as np
import pytest

import voxprint
from voxprint.backends import cosine_similarity


@pytest.fixture(scope="module")
def model():
    return voxprint.load_model("default")


def test_bundled_model_has_a_threshold_and_unit_embeddings(model, speech_file):
    assert model.threshold is not None
    emb = model.extract_embedding(speech_file)
    assert emb.shape == (model.embedding_dim,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)


def test_same_speaker_scores_above_different_speakers(model, dev_dir):
    speakers = sorted(p for p in dev_dir.iterdir() if p.is_dir())[:4]
    files = {spk.name: sorted(spk.glob("*.flac"))[:3] for spk in speakers}
    emb = {name: model.extract_embeddings(paths) for name, paths in files.items()}
    same = [float(e[i] @ e[j]) for e in emb.values() for i in range(3) for j in range(i + 1, 3)]
    names = list(emb)
    different = [float(emb[a][i] @ emb[b][j]) for x, a in enumerate(names) for b in names[x + 1:]
                 for i in range(3) for j in range(3)]
    assert np.mean(same) > np.mean(different) + 0.2
    # Enrolling with two recordings and testing a third of the same speaker beats every impostor.
    enrolled = {name: e[:2].mean(0) for name, e in emb.items()}
    for name, e in emb.items():
        genuine = cosine_similarity(enrolled[name], e[2])
        impostors = [cosine_similarity(enrolled[other], e[2]) for other in names if other != name]
        assert genuine > max(impostors), name


def test_demo_pairs_accept_and_reject(model, dev_dir):
    """The `make demo` decisions, through the model's own back-end and threshold."""
    enroll = [dev_dir / "SPEAKER5017" / "050170101.flac", dev_dir / "SPEAKER5017" / "050170102.flac"]
    genuine = model.verification_score(enroll, dev_dir / "SPEAKER5017" / "050170117.flac")
    impostor = model.verification_score(enroll, dev_dir / "SPEAKER0306" / "003060002.flac")
    assert genuine >= model.threshold > impostor
