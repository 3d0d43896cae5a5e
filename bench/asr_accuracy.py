"""ASR accuracy and speed: huifang's recogniser against plain faster-whisper `base` on real Mandarin clips.

Sets (from ../shared/data/asr):
- `magicdata_cs`: 50 read customer-service sentences, human references.
- `clips`: the clips whose `reference_type` is `human` or `official`.
- `telephone_8k`: clips passed through a simulated G.711 phone line, scored against their source references,
  and `telephone_16k`: the same source clips at their original rate, so the two can be compared directly.

Systems: `huifang` (VAD utterances, narrowband-aware VAD threshold, Simplified output, domain-lexicon homophone
correction, hallucination filter; int8) and `baseline` (plain faster-whisper base with all its defaults -- on a
CPU that is float32 compute -- and `language="zh"`). Both load the same packaged weights.
CER is pooled over each set with `bench.cer` normalisation (t2s, no punctuation, numbers as values).

    python -m bench.asr_accuracy [--sets magicdata_cs,clips,telephone_8k,telephone_16k] [--systems huifang,baseline]

Prints one JSON line per (set, system): cer, edits, ref_chars, clips, audio_s, decode_s, rtf, cores.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asr.audio import decode_audio
from asr.domain import load_domain
from asr.transcribe import Transcriber
from asr.types import AsrOptions
from bench._common import emit, read_csv, require_shared
from bench.cer import corpus_cer

ALL_SETS = ("magicdata_cs", "clips", "telephone_8k", "telephone_16k")
#: Read from an instance: on a slotted dataclass the class attribute is a descriptor, not the default.
_DEFAULT_BEAM = AsrOptions().beam_size


@dataclass(frozen=True)
class Item:
    path: Path
    reference: str
    reference_type: str


def load_sets(asr_dir: Path) -> dict[str, list[Item]]:
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
            beam_size=beam_size or _DEFAULT_BEAM,
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


def baseline_system(model_path: str) -> Callable[[Path], str]:
    """faster-whisper exactly as a newcomer would call it: all defaults but the language (the same weights)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(model_path)

    def run(path: Path) -> str:
        segments, _ = model.transcribe(str(path), language="zh")
        return "".join(s.text for s in segments)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(ALL_SETS))
    parser.add_argument("--systems", default="huifang,baseline")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips per set (0: all)")
    parser.add_argument("--show", action="store_true", help="also print each clip's hypothesis")
    parser.add_argument("--beam", type=int, default=None, help="huifang's beam width (default: AsrOptions')")
    args = parser.parse_args()

    sets = load_sets(require_shared("asr"))
    run_huifang, transcriber = huifang_system(args.threads, args.beam)
    systems: dict[str, Callable[[Path], str]] = {"huifang": run_huifang}
    if "baseline" in args.systems.split(","):
        assert transcriber.model_path is not None
        systems["baseline"] = baseline_system(transcriber.model_path)

    for set_name in args.sets.split(","):
        items = sets[set_name][: args.limit or None]
        audio_s = sum(decode_audio(item.path).duration_s for item in items)
        for system_name in args.systems.split(","):
            run = systems[system_name]
            pairs = []
            started = time.perf_counter()
            for item in items:
                hypothesis = run(item.path)
                pairs.append((item.reference, hypothesis))
                if args.show:
                    emit({"set": set_name, "system": system_name, "file": item.path.name,
                          "reference": item.reference, "hypothesis": hypothesis})
            decode_s = time.perf_counter() - started
            score = corpus_cer(pairs)
            emit({
                "set": set_name, "system": system_name, "cer": round(score.cer, 4), "edits": score.edits,
                "ref_chars": score.ref_chars, "clips": len(items), "audio_s": round(audio_s, 1),
                "decode_s": round(decode_s, 1), "rtf": round(decode_s / audio_s, 3) if audio_s else None,
                "threads": args.threads,
                "beam": (args.beam or _DEFAULT_BEAM) if system_name == "huifang" else 5,
            })


if __name__ == "__main__":
    main()
