"""Audio input: loading, validation and voice activity detection."""
from voxprint.audio.io import MAX_CHANNELS, SUPPORTED_EXTENSIONS, load_audio, validate_waveform
from voxprint.audio.vad import energy_vad_mask, remove_silence

__all__ = [
    "MAX_CHANNELS",
    "SUPPORTED_EXTENSIONS",
    "energy_vad_mask",
    "load_audio",
    "remove_silence",
    "validate_waveform",
]
