"""The service's settings: one frozen record, passed to each uvicorn worker through the environment.

Example:
    >>> config = ServiceConfig(store="speakers.db", rate_limit=120)
    >>> ServiceConfig.from_json(config.to_json()) == config
    True
    >>> ServiceConfig(store="s.db", concurrency=0)
    Traceback (most recent call last):
    ...
    voxprint.errors.ConfigError: service setting concurrency must be at least 1, got 0
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from voxprint.errors import ConfigError

__all__ = ["ENVIRONMENT_VARIABLE", "ServiceConfig"]

#: How ``voxprint serve`` hands its settings to worker processes that uvicorn starts.
ENVIRONMENT_VARIABLE = "VOXPRINT_SERVICE_CONFIG"


@dataclass(frozen=True)
class ServiceConfig:
    """What ``voxprint serve`` was asked for.

    Attributes:
        store: the speaker store file (created when missing).
        model: ``default`` or a trained run folder.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        threads: torch threads per worker (None: leave torch's setting).
        concurrency: requests that embed audio at the same time in one worker; more wait (and count
            against ``timeout``).
        max_upload_bytes: largest request body (HTTP 413 beyond).
        max_audio_seconds: longest recording (HTTP 413 beyond, judged from its header).
        rate_limit: requests a minute per API key and worker (0: no limit; HTTP 429 beyond).
        rate_burst: requests a key may send at once (None: a tenth of ``rate_limit``).
        timeout: seconds from a request's arrival to its response, upload included (HTTP 504 beyond).
        cors_origins: origins allowed to call the API from other sites' pages (none by default).
        optimize: trace the encoder at start-up (:meth:`SpeakerModel.optimize`: seconds once, then
            faster embeddings).
    """

    store: str
    model: str = "default"
    device: str = "cpu"
    threads: int | None = None
    concurrency: int = 2
    max_upload_bytes: int = 25 * 1024 * 1024
    max_audio_seconds: float = 300.0
    rate_limit: float = 600.0
    rate_burst: int | None = None
    timeout: float = 60.0
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    optimize: bool = True

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_upload_bytes"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"service setting {name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_audio_seconds", "timeout"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"service setting {name} must be positive, got {getattr(self, name)}")
        if self.rate_limit < 0:
            raise ConfigError(f"service setting rate_limit must be 0 (no limit) or more, got {self.rate_limit}")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    def to_json(self) -> str:
        """The settings as one JSON line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServiceConfig":
        """Settings from :meth:`to_json`'s text.

        Raises:
            ConfigError: the text is not such settings.
        """
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"malformed service settings in ${ENVIRONMENT_VARIABLE}: {exc}") from None
