"""Speaker diarization ("who spoke when"), target-speaker detection, their scoring and test conversations.

- :func:`diarize`: VAD, sliding-window embeddings, clustering, segments (:mod:`.pipeline`);
- :func:`spot`: where one enrolled speaker talks (:mod:`.spot`);
- :func:`score_diarization`: DER, JER and speaker-count accuracy with ``pyannote.metrics`` (:mod:`.scoring`);
- :func:`simulate_conversations`: conversations with realistic turn-taking from single-speaker
  utterances (:mod:`.simulate`);
- RTTM files (:mod:`.segments`), speech detection (:mod:`.vad`), clustering (:mod:`.clustering`) and
  timeline plots (:mod:`.plot`).
"""
from voxprint.diarization.clustering import cluster_embeddings
from voxprint.diarization.pipeline import Diarization, diarize
from voxprint.diarization.plot import plot_timeline
from voxprint.diarization.scoring import DiarizationScore, score_diarization
from voxprint.diarization.segments import Segment, format_rttm, read_rttm, write_rttm
from voxprint.diarization.simulate import simulate_conversations
from voxprint.diarization.spot import SpotResult, spot
from voxprint.diarization.vad import speech_regions

__all__ = ["Diarization", "DiarizationScore", "Segment", "SpotResult", "cluster_embeddings", "diarize",
           "format_rttm", "plot_timeline", "read_rttm", "score_diarization", "simulate_conversations",
           "speech_regions", "spot", "write_rttm"]
