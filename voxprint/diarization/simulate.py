"""Simulated conversations for evaluating diarization, from single-speaker utterances.

Following Landini et al. ("From Simulated Mixtures to Simulated Conversations as Training Data for
End-to-End Neural Diarization", Interspeech 2022), a conversation is a sequence of turns whose
pauses and overlaps are drawn from distributions measured on real conversations, instead of
utterances dropped at random times. The only real conversation with a reference here is the
pyannote.audio sample (30 s, 2 speakers, 10 segments); :func:`turn_statistics` measures its
transitions (each segment against the end of all speech before it):

===========================  =========================================================================
transition                   pyannote-sample (``turn_statistics`` of ``sample.rttm``)
===========================  =========================================================================
speaker changes              8 (and 1 back-channel inside another speaker's turn, left out here)
  with a pause               3: 0.43, 0.13, 0.29 s (mean 0.28 s)
  with an overlap            5: 0.03, 0.10, 0.46, 0.21, 0.65 s (mean 0.29 s)
same speaker continues       0
===========================  =========================================================================

With so few transitions the histograms of Landini et al. cannot be estimated, so the simulator draws
from the maximum-likelihood exponential fits: pauses ~ Exponential(mean :data:`PAUSE_MEAN`),
overlaps ~ Exponential(mean :data:`OVERLAP_MEAN`), the overlap limited to half of the shorter of
the two utterances. A speaker change overlaps with probability :data:`OVERLAP_PROBABILITY`:

- ``heavy``: the sample's rate, 5 of 8 changes (0.625);
- ``light``: a third of it (0.2);
- ``none``: never (pauses only).

The next speaker is always another one (the sample has no same-speaker continuation), chosen at
random among those with utterances left; each speaker says ``utterances_per_speaker`` utterances.

Each utterance is cut to its speech (Silero VAD, or the energy VAD without ``silero-vad``; pauses
of 0.2 s or more inside it split its segments in the reference) with :data:`MARGIN` seconds of its own
background on each side and 10 ms fades, scaled so its speech has an RMS of -25 dBFS plus a uniform
gain in +-3 dB, and added at its place; the turn timing above is between speech marks. The reference
RTTM lists each utterance's speech marks.

The whole mix gets a pink-noise floor :data:`NOISE_FLOOR_DB` below the speech level (the median
background of the speechocean762 dev recordings, measured with the same VAD). Without it the gaps
between utterances would be digital zeros, which real recordings never hold: the filterbank's log
floor then dominates the embedding of any window that contains a few of them, and such windows look
alike whoever speaks in them. The mix is scaled down only if it would clip.

Optional acoustics (:class:`Acoustics`), drawn from a generator of their own so the turns, and the
reference RTTM, are the same with or without them:

- reverberation: each speaker of a conversation gets one room impulse response from a simulated bank
  (:class:`~voxprint.data.rir.RIRBank`, RT60 0.2-0.9 s), applied to every utterance of theirs, aligned on
  its direct path (the reference keeps the dry speech marks: reverberant tails are not speech);
- background noise at a stated SNR to the speech level, of a colour drawn per conversation (white to
  brown, spectral slope ``1/f**beta`` with beta uniform in [0, 2]).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from voxprint.audio import load_audio
from voxprint.data.signal import coloured_noise, reverberate
from voxprint.diarization.segments import Segment, format_rttm
from voxprint.diarization.vad import speech_regions
from voxprint.errors import DataError, VoxprintError
from voxprint.fileio import atomic_write, atomic_write_text

__all__ = ["OVERLAP_MEAN", "OVERLAP_PROBABILITY", "PAUSE_MEAN", "Acoustics", "Conversation", "simulate_conversation",
           "simulate_conversations", "turn_statistics"]

OverlapLevel = Literal["none", "light", "heavy"]

#: Mean pause between two speakers' turns (seconds), from the pyannote sample.
PAUSE_MEAN = 0.283
#: Mean overlap of two speakers' turns (seconds), from the pyannote sample.
OVERLAP_MEAN = 0.290
#: Probability that a speaker change overlaps, by level.
OVERLAP_PROBABILITY = {"none": 0.0, "light": 0.2, "heavy": 0.625}
#: Speech level of every utterance before its random gain (dBFS, RMS over its speech).
LEVEL_DBFS = -25.0
#: Range of the random gain (dB).
GAIN_DB = 3.0
#: Pauses inside an utterance at least this long split its reference segments.
MIN_PAUSE = 0.2
#: Seconds of an utterance's own background kept before its first and after its last speech mark.
MARGIN = 0.1
#: The pink-noise floor of the mix, relative to the speech level (dB).
NOISE_FLOOR_DB = -30.0
#: Fade-in and fade-out of each placed utterance (seconds), so its edges do not click.
FADE = 0.01
#: Impulse responses simulated for reverberant conversations (one per speaker is drawn from them).
RIR_BANK_SIZE = 24


def turn_statistics(segments: Sequence[Segment]) -> dict[str, list[float]]:
    """Pauses and overlaps at the transitions of a real conversation (see the module docstring).

    Each segment (in start order) is compared with the end of all speech before it: a segment that
    ends before that is a back-channel; otherwise it follows the speaker who spoke last with a pause
    (``start >= end``) or an overlap.

    Args:
        segments: the conversation's reference segments.

    Returns:
        ``change_pauses``, ``change_overlaps``, ``same_pauses`` and ``backchannels`` (durations in seconds).

    Example:
        >>> turn_statistics([Segment(0, 2, "a"), Segment(1.5, 3, "b"), Segment(3.5, 4, "a")])["change_overlaps"]
        [0.5]
    """
    stats: dict[str, list[float]] = {"change_pauses": [], "change_overlaps": [], "same_pauses": [],
                                     "backchannels": []}
    ordered = sorted(segments)
    if not ordered:
        return stats
    floor, last_speaker = ordered[0].end, ordered[0].speaker
    for seg in ordered[1:]:
        if seg.end <= floor:
            stats["backchannels"].append(round(seg.duration, 3))
            continue
        gap = seg.start - floor
        if seg.speaker == last_speaker:
            stats["same_pauses"].append(round(max(gap, 0.0), 3))
        elif gap >= 0:
            stats["change_pauses"].append(round(gap, 3))
        else:
            stats["change_overlaps"].append(round(-gap, 3))
        floor, last_speaker = seg.end, seg.speaker
    return stats


@dataclass(frozen=True)
class Conversation:
    """One simulated conversation.

    Attributes:
        wave: the mix (float32, at ``sample_rate``).
        sample_rate: its rate.
        segments: the reference: each utterance's speech marks, labelled with its speaker.
        sources: the utterance ids used, in order of their turns.
    """

    wave: np.ndarray
    sample_rate: int
    segments: list[Segment]
    sources: list[str]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.wave) / self.sample_rate


def _speech_marks(wave: np.ndarray, rate: int) -> np.ndarray:
    return speech_regions(wave, rate, min_speech=0.1, min_silence=MIN_PAUSE, pad=0.0)


def _turn_order(counts: dict[str, int], rng: np.random.Generator) -> list[str]:
    """Speakers of successive turns: always another speaker with turns left, when there is one.

    Speakers are drawn in proportion to their turns left, and one holding at least half of all the
    turns left is taken at once, so no one is left talking alone at the end when that can be avoided.
    """
    left = dict(counts)
    order: list[str] = []
    while any(left.values()):
        previous = order[-1] if order else None
        choices = [s for s, n in left.items() if n > 0 and s != previous] or [previous]
        remaining = sum(left.values())
        urgent = [s for s in choices if 2 * left[s] >= remaining]
        choices = urgent or choices
        weights = np.array([left[s] for s in choices], dtype=np.float64)
        speaker = choices[int(rng.choice(len(choices), p=weights / weights.sum()))]
        order.append(speaker)
        left[speaker] -= 1
    return order


@dataclass
class Acoustics:
    """Reverberation and background noise added to simulated conversations (see the module docstring).

    Attributes:
        rng: their own random generator (so the turns do not depend on them).
        snr_db: speech-to-noise ratio of the background noise, or None for none.
        rirs: the room impulse responses speakers are given, or None for a dry mix.
    """

    rng: np.random.Generator
    snr_db: float | None = None
    rirs: Any = None

    def speaker_rirs(self, speakers: Sequence[str]) -> dict[str, np.ndarray]:
        """One impulse response per speaker (none without a bank)."""
        return {s: self.rirs.sample(self.rng) for s in sorted(speakers)} if self.rirs is not None else {}

    def noise(self, length: int, sample_rate: int) -> np.ndarray:
        """Background noise at :attr:`snr_db` below the speech level (zeros when there is none)."""
        if self.snr_db is None:
            return np.zeros(length)
        level = 10 ** ((LEVEL_DBFS - self.snr_db) / 20)
        return level * coloured_noise(length, float(self.rng.uniform(0.0, 2.0)), self.rng, sample_rate)


def simulate_conversation(utterances: dict[str, Sequence[tuple[str, str | os.PathLike]]], overlap: OverlapLevel,
                          rng: np.random.Generator, sample_rate: int = 16000, lead_seconds: float = 0.5,
                          acoustics: Acoustics | None = None) -> Conversation:
    """One conversation between the given speakers (see the module docstring).

    Args:
        utterances: speaker -> its ``(utterance id, audio path)`` pairs, all of which are said.
        overlap: ``none``, ``light`` or ``heavy``.
        rng: the random generator.
        sample_rate: the rate of the mix.
        lead_seconds: silence before the first and after the last turn.
        acoustics: reverberation and background noise, if any.

    Returns:
        The :class:`Conversation`.

    Raises:
        VoxprintError: an unknown overlap level.
        AudioError: an utterance cannot be read.
        DataError: an utterance holds no speech.
    """
    if overlap not in OVERLAP_PROBABILITY:
        raise VoxprintError(f"unknown overlap level {overlap!r}; use none, light or heavy")
    pools = {s: list(u) for s, u in utterances.items()}
    order = _turn_order({s: len(u) for s, u in pools.items()}, rng)
    rooms = acoustics.speaker_rirs(list(pools)) if acoustics is not None else {}
    placed: list[tuple[int, np.ndarray]] = []
    segments: list[Segment] = []
    sources: list[str] = []
    cursor = lead_seconds  # where the previous turn's speech ended
    previous_length = None
    for speaker in order:
        utt, path = pools[speaker].pop(0)
        wave = load_audio(path, target_rate=sample_rate)
        marks = _speech_marks(wave, sample_rate)
        if not len(marks):
            raise DataError(f"utterance {utt} ({path}) holds no speech to simulate a turn with")
        margin = int(round(MARGIN * sample_rate))
        first = max(0, int(round(marks[0, 0] * sample_rate)) - margin)
        last = min(len(wave), int(round(marks[-1, 1] * sample_rate)) + margin)
        speech = wave[first:last].astype(np.float64)
        if speaker in rooms:  # room for the reverberant tail after the last word, then the room itself
            padded = np.concatenate([speech, np.zeros(len(rooms[speaker]))]).astype(np.float32)
            speech = reverberate(padded, rooms[speaker], direct=0).astype(np.float64)
        fade = min(int(round(FADE * sample_rate)), len(speech) // 2)
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        speech[:fade] *= ramp
        speech[len(speech) - fade:] *= ramp[::-1]
        inside = np.concatenate([wave[int(s * sample_rate):int(e * sample_rate)] for s, e in marks])
        gain_db = LEVEL_DBFS + rng.uniform(-GAIN_DB, GAIN_DB) - 20 * np.log10(np.sqrt(np.mean(inside ** 2)) + 1e-12)
        speech *= 10 ** (gain_db / 20)
        length = marks[-1, 1] - marks[0, 0]
        if previous_length is None:
            start = cursor
        elif rng.random() < OVERLAP_PROBABILITY[overlap]:
            start = cursor - min(rng.exponential(OVERLAP_MEAN), 0.5 * min(length, previous_length))
        else:
            start = cursor + rng.exponential(PAUSE_MEAN)
        # ``offset`` is where sample ``first`` of the utterance lands, so its first speech mark is at ``start``.
        offset = int(round(start * sample_rate)) - (int(round(marks[0, 0] * sample_rate)) - first)
        placed.append((offset, speech))
        segments.extend(Segment(round((offset + int(round(s * sample_rate)) - first) / sample_rate, 3),
                                round((offset + int(round(e * sample_rate)) - first) / sample_rate, 3), speaker)
                        for s, e in marks)
        sources.append(utt)
        cursor, previous_length = start + length, length
    total = max(o + len(s) for o, s in placed) + int(round(lead_seconds * sample_rate))
    mix = np.zeros(total, dtype=np.float64)
    for offset, speech in placed:
        mix[offset:offset + len(speech)] += speech
    level = 10 ** ((LEVEL_DBFS + NOISE_FLOOR_DB) / 20)
    mix += level * coloured_noise(total, 1.0, rng, sample_rate)
    if acoustics is not None:
        mix += acoustics.noise(total, sample_rate)
    peak = np.abs(mix).max()
    if peak > 0.99:
        mix *= 0.99 / peak
    return Conversation(mix.astype(np.float32), sample_rate, sorted(segments), sources)


def _parse_range(speakers: int | tuple[int, int]) -> tuple[int, int]:
    low, high = (speakers, speakers) if isinstance(speakers, int) else speakers
    if not 1 <= low <= high:
        raise VoxprintError(f"speaker counts must satisfy 1 <= min <= max, got {low} and {high}")
    return low, high


def simulate_conversations(data_dir: str | os.PathLike, out: str | os.PathLike, num: int = 10,
                           speakers: int | tuple[int, int] = (2, 4), overlap: OverlapLevel = "light",
                           seed: int = 0, utterances_per_speaker: int = 4, prefix: str = "conv",
                           snr_db: float | None = None, reverb: bool = False,
                           rir_cache: str | os.PathLike | None = None) -> list[str]:
    """Write ``num`` simulated conversations as a data folder: ``wav/ID.wav``, ``rttm``, ``wav.scp``, ``reco2num_spk``.

    Speakers are drawn at random from the folder's ``utt2spk`` (each conversation draws its own), with
    ``utterances_per_speaker`` of their utterances each; the number of speakers is drawn uniformly from
    ``speakers``. ``simulation.json`` records the settings and each conversation's sources.

    Args:
        data_dir: a Kaldi data folder of single-speaker utterances (``wav.scp`` + ``utt2spk``).
        out: the output folder.
        num: number of conversations.
        speakers: the number of speakers, or an inclusive ``(min, max)`` range.
        overlap: ``none``, ``light`` or ``heavy``.
        seed: seed of every random choice.
        utterances_per_speaker: turns per speaker.
        prefix: conversation ids are ``{prefix}{index:04d}``.
        snr_db: add background noise at this speech-to-noise ratio (dB); None: only the quiet floor.
        reverb: give each speaker a simulated room impulse response.
        rir_cache: where the impulse-response bank is cached (``.npz``; simulated when missing).

    Returns:
        The conversation ids.

    Raises:
        DataError: the folder has too few speakers or utterances for the request.
        VoxprintError: bad counts or overlap level.
    """
    import soundfile as sf

    from voxprint.data import read_data_folder

    if num < 1 or utterances_per_speaker < 1:
        raise VoxprintError("num and utterances_per_speaker must be at least 1")
    if overlap not in OVERLAP_PROBABILITY:
        raise VoxprintError(f"unknown overlap level {overlap!r}; use none, light or heavy")
    low, high = _parse_range(speakers)
    folder = read_data_folder(data_dir)
    eligible = [s for s in folder.speakers if len(folder.spk2utt[s]) >= utterances_per_speaker]
    if len(eligible) < high:
        raise DataError(f"{folder.root} has {len(eligible)} speakers with at least {utterances_per_speaker} "
                        f"utterances; {high} are needed")
    rng = np.random.default_rng(seed)
    acoustics = None
    if snr_db is not None or reverb:
        from voxprint.data.rir import RIRBank

        acoustics = Acoustics(np.random.default_rng([seed, 1]), snr_db,
                              # One fixed bank (cacheable across runs); which room a speaker gets is drawn per seed.
                              RIRBank(RIR_BANK_SIZE, 16000, cache=rir_cache, seed=0) if reverb else None)
    out = Path(out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    ids, rttm, scp, counts, record = [], [], [], [], []
    for index in range(num):
        count = int(rng.integers(low, high + 1))
        chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=count, replace=False))]
        utterances = {}
        for speaker in chosen:
            pool = folder.spk2utt[speaker]
            picks = rng.choice(len(pool), size=utterances_per_speaker, replace=False)
            utterances[speaker] = [(pool[i], folder.wav[pool[i]]) for i in picks]
        conversation = simulate_conversation(utterances, overlap, rng, acoustics=acoustics)
        conv_id = f"{prefix}{index:04d}"
        path = out / "wav" / f"{conv_id}.wav"
        atomic_write(path, lambda h, c=conversation: sf.write(h, c.wave, c.sample_rate, format="WAV", subtype="PCM_16"))
        ids.append(conv_id)
        rttm.append(format_rttm(conversation.segments, conv_id))
        scp.append(f"{conv_id} wav/{conv_id}.wav\n")
        counts.append(f"{conv_id} {count}\n")
        record.append({"id": conv_id, "speakers": chosen, "sources": conversation.sources,
                       "seconds": round(conversation.duration, 3)})
    atomic_write_text(out / "rttm", "".join(rttm))
    atomic_write_text(out / "wav.scp", "".join(scp))
    atomic_write_text(out / "reco2num_spk", "".join(counts))
    settings = {"data": str(folder.root), "num": num, "speakers": [low, high], "overlap": overlap, "seed": seed,
                "utterances_per_speaker": utterances_per_speaker, "pause_mean": PAUSE_MEAN,
                "overlap_mean": OVERLAP_MEAN, "overlap_probability": OVERLAP_PROBABILITY[overlap],
                "snr_db": snr_db, "reverb": reverb,
                "conversations": record}
    atomic_write_text(out / "simulation.json", json.dumps(settings, indent=1) + "\n")
    return ids
