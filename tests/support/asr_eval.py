"""The shared data's ASR reference sets and huifang's recogniser as they are evaluated: by the accuracy benchmark
(`bench.asr_accuracy`) and by tests/integration/test_transcribe.py, which checks that the benchmark runs with the
recogniser's defaults."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asr.audio import decode_audio
from asr.domain import load_domain
from asr.transcribe import Transcriber
from asr.types import AsrOptions


def read_csv(path: Path) -> list[dict[str, str]]:
    """All rows of a UTF-8 CSV file with a header."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


#: Read from an instance: on a slotted dataclass the class attribute is a descriptor, not the default.
DEFAULT_BEAM = AsrOptions().beam_size


@dataclass(frozen=True)
class Item:
    """One clip of a reference set and its reference text (`reference_type`: human, official, ...)."""

    path: Path
    reference: str
    reference_type: str


def load_sets(asr_dir: Path) -> dict[str, list[Item]]:
    """The reference sets of the shared data's `asr` folder by name (see `bench.asr_accuracy`)."""
    manifest = {r["file"]: r for r in read_csv(asr_dir / "manifest.csv")}
    sets: dict[str, list[Item]] = {}
    magic = asr_dir / "magicdata_cs"
    sets["magicdata_cs"] = [
        Item(magic / r["file"], r["text"], "human")
        for r in read_csv(magic / "transcripts.csv")
    ]
    sets["clips"] = [
        Item(asr_dir / "clips" / name, r["reference"], r["reference_type"])
        for name, r in manifest.items()
        if r["reference"] and r["reference_type"].split("(")[0] in ("human", "official")
    ]
    tel_8k, tel_16k = [], []
    for path in sorted((asr_dir / "telephone_8k").glob("*.wav")):
        source = path.name.replace("_8k_ulaw.wav", ".wav")
        row = manifest.get(source)
        # Clips without any reference cannot be scored; model-made references are used here because the
        # comparison is 8 kHz against 16 kHz of the same clip, scored against the same text.
        if row is None or not row["reference"]:
            continue
        tel_8k.append(Item(path, row["reference"], row["reference_type"]))
        tel_16k.append(Item(asr_dir / "clips" / source, row["reference"], row["reference_type"]))
    sets["telephone_8k"], sets["telephone_16k"] = tel_8k, tel_16k
    return sets


def huifang_system(threads: int, beam_size: int | None = None,
                   cache_dir: str | None = None) -> tuple[Callable[[Path], str], Transcriber]:
    """huifang's recogniser as the benchmark runs it, and a function from an audio file to its text."""
    domain = load_domain()
    transcriber = Transcriber(
        AsrOptions(
            model_cache_dir=cache_dir,
            cpu_threads=threads,
            beam_size=beam_size or DEFAULT_BEAM,
            initial_prompt=domain.initial_prompt,
            hallucination_phrases=domain.hallucination_phrases,
            lexicon=domain.lexicon,
        )
    )
    transcriber.load()

    def run(path: Path) -> str:
        audio = decode_audio(path)
        return "".join(u.text for u in transcriber.transcribe(audio))

    return run, transcriber
