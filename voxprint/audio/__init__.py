"""Audio input: loading, validation and voice activity detection."""
from voxprint.audio.io import (
    DEFAULT_MAX_SECONDS,
    MAX_CHANNELS,
    SUPPORTED_EXTENSIONS,
    audio_file_problem,
    load_audio,
    validate_waveform,
)
from voxprint.audio.vad import energy_vad_mask, remove_silence

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "audio_file_problem",
    "MAX_CHANNELS",
    "SUPPORTED_EXTENSIONS",
    "energy_vad_mask",
    "load_audio",
    "remove_silence",
    "validate_waveform",
]
