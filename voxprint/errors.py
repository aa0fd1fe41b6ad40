"""Exception types. Every error a user can cause is a :class:`VoxprintError` whose message says what to do."""


class VoxprintError(Exception):
    """Base class for errors caused by input, configuration or data (not by bugs)."""


class AudioError(VoxprintError):
    """An audio file or array cannot be used: missing, unreadable, empty, silent, non-finite or too short."""


class ConfigError(VoxprintError):
    """A configuration file or option is invalid."""


class DataError(VoxprintError):
    """A data folder, trial list or embedding file is missing or malformed."""


class ModelError(VoxprintError):
    """A model cannot be found or loaded."""


class StoreError(VoxprintError):
    """A speaker store cannot be opened or changed as asked (unknown speaker, other model, corrupt file...)."""
