"""Verification with a model folder's stored back-end and threshold, whatever computes the embeddings.

:class:`~voxprint.inference.SpeakerModel` (PyTorch, or an ONNX encoder inside voxprint's pipeline) and
:class:`~voxprint.export.standalone.StandaloneEmbedder` (an ONNX export without torch) both verify
through this mixin, so they read the same ``meta.json`` and ``backend/`` the same way. It imports no
torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from voxprint.errors import AudioError

__all__ = ["BackendVerification"]


class BackendVerification:
    """``threshold``, ``backend`` and ``verification_score`` from a model folder.

    A class using it sets ``meta`` (the folder's ``meta.json``), ``model_dir`` (the folder, or None for a
    model built in memory) and ``_backend = None``, and has ``extract_embedding`` and
    ``extract_embeddings``.
    """

    meta: dict[str, Any]
    model_dir: Path | None
    _backend: Any

    @property
    def threshold(self) -> float | None:
        """The accept threshold stored by ``voxprint eval --write-threshold`` (None when there is none)."""
        return self.meta.get("threshold")

    @property
    def backend(self) -> Any:
        """The scoring back-end named in ``meta.json`` (plain cosine when none is named)."""
        if self._backend is None:
            from voxprint.backends.backend import ScoringBackend

            options = self.meta.get("backend", {})
            self._backend = (ScoringBackend.load(self.model_dir, **options) if options and self.model_dir
                             else ScoringBackend())
        return self._backend

    def verification_score(self, enroll: Sequence[Any], test: Any) -> float:
        """Score of ``test`` against a speaker enrolled from every recording of ``enroll``, with the
        model's back-end (a log-likelihood ratio when the back-end is calibrated); compare it with
        :attr:`threshold`.

        Raises:
            AudioError: no enrollment recording, or a recording cannot be used.
        """
        enroll = list(enroll)
        if not enroll:
            raise AudioError("verification needs at least one enrollment recording")
        return float(self.backend.score(self.extract_embeddings(enroll), self.extract_embedding(test)))
