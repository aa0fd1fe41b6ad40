"""Data folders and the GE2E batch sampler, on the real speechocean762 folders."""
import os

import numpy as np
import pytest

from voxprint.data import GE2EBatchSampler, prepare_data_folder, read_data_folder
from voxprint.data.dataset import CropDataset
from voxprint.errors import DataError
from voxprint.features import LogMelFbank


def test_reads_real_train_folder_with_relative_paths(train_dir):
    folder = read_data_folder(train_dir)
    assert len(folder) == 1250 and len(folder.speakers) == 125
    assert all(len(utts) == 10 for utts in folder.spk2utt.values())
    assert all(path.is_absolute() and path.is_file() for path in folder.wav.values())


def test_prepare_from_speaker_tree_round_trips(tmp_path, train_dir):
    source = read_data_folder(train_dir)
    tree = tmp_path / "audio"
    expected = {}
    for spk in source.speakers[:3]:
        (tree / spk).mkdir(parents=True)
        for utt in source.spk2utt[spk][:2]:
            os.symlink(source.wav[utt], tree / spk / f"{utt}.flac")
            expected[f"{spk}-{utt}"] = spk
    prepared = prepare_data_folder(tree, tmp_path / "data")
    assert prepared.utt2spk == expected
    reread = read_data_folder(tmp_path / "data")
    assert reread.utt2spk == expected
    assert (tmp_path / "data" / "wav.scp").read_text().split("\n")[0].split()[1].startswith("../audio/")


def test_prepare_rejects_files_outside_speaker_folders(tmp_path, speech_file):
    os.symlink(speech_file, tmp_path / "loose.flac")
    with pytest.raises(DataError, match="speaker folder"):
        prepare_data_folder(tmp_path)


@pytest.mark.parametrize("content,match", [
    ("utt1\n", "expected 'KEY VALUE'"),
    ("utt1 a.wav\nutt1 b.wav\n", "duplicate"),
    ("utt1 sox a.wav -t wav - |\n", "pipe"),
    ("utt1 missing.wav\n", "do not exist"),
])
def test_malformed_wav_scp(tmp_path, content, match):
    (tmp_path / "wav.scp").write_text(content)
    (tmp_path / "utt2spk").write_text("utt1 spk\n")
    with pytest.raises(DataError, match=match):
        read_data_folder(tmp_path)


def test_missing_folder_and_speaker(tmp_path, speech_file):
    with pytest.raises(DataError, match="does not exist"):
        read_data_folder(tmp_path / "nope")
    (tmp_path / "wav.scp").write_text(f"u1 {speech_file}\n")
    (tmp_path / "utt2spk").write_text("u2 spk\n")
    with pytest.raises(DataError, match="no speaker"):
        read_data_folder(tmp_path)


def test_validation_split_is_disjoint_and_keeps_speakers(train_dir):
    train, valid = read_data_folder(train_dir).split_validation(0.2, seed=3)
    assert not set(train.wav) & set(valid.wav)
    assert len(train) + len(valid) == 1250
    assert set(valid.speakers) == set(train.speakers)
    assert all(len(u) == 2 for u in valid.spk2utt.values())


def test_sampler_shapes_crop_lengths_and_determinism():
    groups = [list(range(i * 10, i * 10 + 10)) for i in range(20)] + [[200]]
    sampler = GE2EBatchSampler(groups, 8, 4, (140, 180), batches_per_epoch=30, seed=5)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert len(batches) == 30
    lengths = {req.num_frames for batch in batches for req in batch}
    assert min(lengths) >= 140 and max(lengths) <= 180 and len(lengths) > 5
    for batch in batches:
        assert len(batch) == 32 and len({r.num_frames for r in batch}) == 1
        speakers = [next(s for s, g in enumerate(groups) if r.utterance in g) for r in batch]
        blocks = [speakers[i:i + 4] for i in range(0, 32, 4)]
        assert all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) == 8
    assert [b[0] for b in batches] == [b[0] for b in sampler]  # same epoch replays
    sampler.set_epoch(3)
    assert [b[0] for b in batches] != [b[0] for b in sampler]


def test_sampler_ranks_partition_the_epoch():
    groups = [list(range(i * 5, i * 5 + 5)) for i in range(10)]
    full = GE2EBatchSampler(groups, 4, 2, (140, 180), batches_per_epoch=7, seed=1).epoch_batches()
    shards = [list(GE2EBatchSampler(groups, 4, 2, (140, 180), batches_per_epoch=7, seed=1, rank=r, world_size=2))
              for r in range(2)]
    assert [len(s) for s in shards] == [4, 3]
    assert shards[0] + shards[1] == full[0::2] + full[1::2]


def test_sampler_needs_enough_speakers():
    with pytest.raises(DataError, match="speakers_per_batch"):
        GE2EBatchSampler([[0, 1], [2, 3]], 3, 2, (140, 180))


def test_crop_dataset_gives_exact_lengths_and_tiles_short_audio(train_dir):
    fbank = LogMelFbank()
    full = read_data_folder(train_dir)
    folder = full.subset(full.speakers[:1])
    dataset = CropDataset(folder, 16000, fbank.num_samples)
    groups = dataset.speaker_utterances()
    sampler = GE2EBatchSampler(groups * 2, 2, 3, (150, 150), batches_per_epoch=1)
    for request in next(iter(sampler)):
        wave, label = dataset[request]
        assert wave.shape[0] == fbank.num_samples(150) and label == 0
        assert fbank(wave).shape == (150, 40)
    shortest = min(range(len(dataset)), key=lambda i: len(dataset.waveform(i)))
    long_request = type(request)(shortest, 0.0, 2000)  # 20 s: longer than any utterance
    wave, _ = dataset[long_request]
    original = dataset.waveform(shortest)
    np.testing.assert_array_equal(wave.numpy()[len(original):2 * len(original)], original)
