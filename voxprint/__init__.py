"""voxprint: speaker verification — train, enroll, verify and evaluate speaker embeddings.

Example:
    >>> import voxprint
    >>> model = voxprint.load_model("default")  # doctest: +SKIP
    >>> model.compute_similarity("a.flac", "b.flac")  # doctest: +SKIP
"""
__version__ = "0.1.0"


def load_model(name_or_dir="default", device="cpu"):
    """See :func:`voxprint.inference.load_model` (imported lazily to keep ``import voxprint`` fast)."""
    from voxprint.inference import load_model as _load_model

    return _load_model(name_or_dir, device=device)
