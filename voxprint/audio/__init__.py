"""Audio input: loading, validation and voice activity detection."""
from voxprint.audio.io import (
    DEFAULT_MAX_SECONDS,
    MAX_CHANNELS,
    SUPPORTED_EXTENSIONS,
    audio_file_problem,
    check_audio_files,
    load_audio,
    validate_waveform,
)
from voxprint.audio.vad import energy_vad_mask, remove_silence

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "audio_file_problem",
    "check_audio_files",
    "MAX_CHANNELS",
    "SUPPORTED_EXTENSIONS",
    "energy_vad_mask",
    "load_audio",
    "remove_silence",
    "validate_waveform",
]
