"""voxprint: speaker verification — train, enroll, verify and evaluate speaker embeddings.

Example:
    >>> import voxprint
    >>> from voxprint.paths import data_root
    >>> speaker = data_root() / "speechocean762" / "dev" / "SPEAKER5017"
    >>> model = voxprint.load_model("default")
    >>> round(model.compute_similarity(speaker / "050170101.flac", speaker / "050170102.flac"), 2)
    0.7
"""
__version__ = "0.1.0"


def load_model(name_or_dir="default", device="cpu", **options):
    """See :func:`voxprint.inference.load_model` (imported lazily to keep ``import voxprint`` fast)."""
    from voxprint.inference import load_model as _load_model

    return _load_model(name_or_dir, device=device, **options)
