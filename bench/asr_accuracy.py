"""ASR accuracy and speed: huifang's recogniser against plain faster-whisper `base` on real Mandarin clips.

Sets (from ../shared/data/asr):
- `magicdata_cs`: 50 read customer-service sentences, human references.
- `clips`: the clips whose `reference_type` is `human` or `official`.
- `telephone_8k`: clips passed through a simulated G.711 phone line, scored against their source references,
  and `telephone_16k`: the same source clips at their original rate, so the two can be compared directly.

Systems: `huifang` (VAD utterances, narrowband-aware VAD threshold, Simplified output, domain-lexicon homophone
correction, hallucination filter; int8) and `baseline` (plain faster-whisper base with all its defaults -- on a
CPU that is float32 compute -- and `language="zh"`). Both load the same packaged weights.
CER is pooled over each set with `tools.cer` normalisation (t2s, no punctuation, numbers as values).

    python -m bench.asr_accuracy [--sets magicdata_cs,clips,telephone_8k,telephone_16k] [--systems huifang,baseline]

Prints one JSON line per (set, system): cer, edits, ref_chars, clips, audio_s, decode_s, rtf, cores.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from asr.audio import decode_audio
from bench._common import emit, require_shared
from tests.support.asr_eval import DEFAULT_BEAM, huifang_system, load_sets
from tools.cer import corpus_cer

ALL_SETS = ("magicdata_cs", "clips", "telephone_8k", "telephone_16k")


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
                "beam": (args.beam or DEFAULT_BEAM) if system_name == "huifang" else 5,
            })


if __name__ == "__main__":
    main()
