"""voxprint: speaker verification — train, enroll, verify and evaluate speaker embeddings."""
__version__ = "0.1.0"
