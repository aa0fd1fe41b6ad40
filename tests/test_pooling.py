"""Temporal pooling: shapes, exact masking of padding, agreement with plain statistics."""
import numpy as np
import pytest
import torch

from voxprint.errors import ConfigError
from voxprint.models.pooling import (
    POOLING,
    AttentiveStatisticsPooling,
    TemporalAveragePooling,
    TemporalStatisticsPooling,
    build_pooling,
)

CHANNELS = 6

VARIANTS = {
    "TAP": lambda: TemporalAveragePooling(CHANNELS),
    "TSTP": lambda: TemporalStatisticsPooling(CHANNELS),
    "ASTP": lambda: AttentiveStatisticsPooling(CHANNELS, attention_dim=5),
    "ASTP-global": lambda: AttentiveStatisticsPooling(CHANNELS, attention_dim=5, global_context=True),
    "ASTP-frame": lambda: AttentiveStatisticsPooling(CHANNELS, attention_dim=5, channel_wise=False),
}


def _make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return VARIANTS[name]().double().eval()


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("frames", [1, 7, 200])
def test_output_shape_matches_out_dim(name, frames):
    pool = _make(name)
    out = pool(torch.randn(3, CHANNELS, frames, dtype=torch.float64))
    assert out.shape == (3, pool.out_dim)
    assert pool.out_dim == (CHANNELS if name == "TAP" else 2 * CHANNELS)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_padded_batch_equals_each_sequence_alone(name):
    pool = _make(name)
    torch.manual_seed(1)
    lengths = [23, 9, 40]
    sequences = [torch.randn(1, CHANNELS, n, dtype=torch.float64) for n in lengths]
    batch = torch.full((3, CHANNELS, max(lengths)), float("nan"), dtype=torch.float64)  # padding is garbage
    for i, seq in enumerate(sequences):
        batch[i, :, : lengths[i]] = seq[0]
    pooled = pool(batch, lengths=torch.tensor(lengths))
    alone = torch.cat([pool(seq) for seq in sequences])
    torch.testing.assert_close(pooled, alone)


def test_tap_and_tstp_match_numpy():
    x = torch.randn(4, CHANNELS, 31, dtype=torch.float64)
    ref = x.numpy()
    np.testing.assert_allclose(TemporalAveragePooling(CHANNELS)(x).numpy(), ref.mean(axis=-1), rtol=1e-12)
    stats = TemporalStatisticsPooling(CHANNELS)(x).numpy()
    np.testing.assert_allclose(stats[:, :CHANNELS], ref.mean(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(stats[:, CHANNELS:], ref.std(axis=-1), rtol=1e-12)


def test_tstp_std_is_floored_for_constant_channels():
    x = torch.ones(1, CHANNELS, 10, requires_grad=True)
    out = TemporalStatisticsPooling(CHANNELS, eps=1e-4)(x)
    torch.testing.assert_close(out[:, CHANNELS:], torch.full((1, CHANNELS), 1e-2))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("global_context", [False, True])
def test_astp_with_constant_attention_equals_tstp(global_context):
    pool = AttentiveStatisticsPooling(CHANNELS, attention_dim=5, global_context=global_context).double()
    with torch.no_grad():
        pool.attention[-1].weight.zero_()
        pool.attention[-1].bias.zero_()
    x = torch.randn(2, CHANNELS, 17, dtype=torch.float64)
    lengths = torch.tensor([17, 11])
    torch.testing.assert_close(pool(x, lengths), TemporalStatisticsPooling(CHANNELS)(x, lengths))


@pytest.mark.parametrize("name", ["ASTP", "ASTP-global", "ASTP-frame"])
def test_astp_weights_sum_to_one_over_valid_frames(name):
    pool = _make(name)
    lengths = torch.tensor([12, 5])
    weights = pool.attention_weights(torch.randn(2, CHANNELS, 12, dtype=torch.float64), lengths)
    assert weights.shape[1] == (1 if name == "ASTP-frame" else CHANNELS)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:2], dtype=torch.float64))
    assert (weights[1, :, 5:] == 0).all()


def test_registry_names_and_unknown_name():
    assert set(POOLING) == {"TAP", "TSTP", "ASTP"}
    assert build_pooling("ASTP", 8, attention_dim=4, global_context=True).out_dim == 16
    with pytest.raises(ConfigError, match="unknown pooling 'MAX'"):
        build_pooling("MAX", 8)


def test_astp_global_context_scores_frames_next_to_the_utterance_statistics():
    """The per-utterance shortcut equals scoring the concatenation [x_t, mean, std] frame by frame."""
    pool = _make("ASTP-global")
    x = torch.randn(2, CHANNELS, 19, dtype=torch.float64)
    stats = TemporalStatisticsPooling(CHANNELS)(x)
    context = stats.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    expected = torch.softmax(pool.attention(torch.cat([x, context], dim=1)), dim=-1)
    torch.testing.assert_close(pool.attention_weights(x), expected)
