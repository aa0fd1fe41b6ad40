"""Speaker store: enrolled speakers kept in one SQLite file, identification with an honest "unknown"."""
from voxprint.store.index import SpeakerIndex
from voxprint.store.speakers import Candidate, Identification, SpeakerStore
from voxprint.store.sqlite import EmbeddingTable, Enrollment, SpeakerRecord, check_speaker_id

__all__ = ["Candidate", "EmbeddingTable", "Enrollment", "Identification", "SpeakerIndex", "SpeakerRecord",
           "SpeakerStore", "check_speaker_id"]
