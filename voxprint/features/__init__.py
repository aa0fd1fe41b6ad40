"""Acoustic features: Kaldi-compatible log mel filterbanks and mean normalisation."""
from voxprint.features.fbank import LogMelFbank, kaldi_mel_banks, kaldi_window, mel_scale
from voxprint.features.raw import RawWaveform
from voxprint.features.mfcc import MFCC, mean_variance_normalize
from voxprint.features.normalize import mean_normalize, sliding_mean_normalize

__all__ = [
    "LogMelFbank",
    "MFCC",
    "RawWaveform",
    "kaldi_mel_banks",
    "kaldi_window",
    "mean_normalize",
    "mean_variance_normalize",
    "mel_scale",
    "sliding_mean_normalize",
]
