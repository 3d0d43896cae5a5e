"""Is batching utterances of different calls into one Whisper encoder pass worth it on this machine?

Encodes B utterance windows (B = 1, 2, 4, 8) of the shared calls one by one and as one batch, for the live
window (10 s) and the stock one (30 s), and prints one JSON line per (window, B) with both times.

    python -m bench.batch_encode
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from asr.audio import decode_audio
from asr.decoder import window_frames
from asr.models import resolve_model
from bench._common import emit, require_shared


def main() -> None:
    import ctranslate2
    from faster_whisper import WhisperModel

    calls = require_shared("calls")
    model = WhisperModel(resolve_model("base"), compute_type="int8")
    utterances: list[np.ndarray] = []
    for script_path in sorted(calls.glob("call_s*.json"))[:4]:
        script = json.loads(script_path.read_text(encoding="utf-8"))
        audio = decode_audio(Path(script_path).with_suffix(".flac")).samples
        for turn in script["turns"]:
            if turn["text"] and turn["end_s"] - turn["start_s"] < 9:
                channel = 0 if turn["speaker"] == "agent" else 1
                utterances.append(audio[channel, int(turn["start_s"] * 16000) : int(turn["end_s"] * 16000)])
    for window_s in (10.0, 30.0):
        for batch in (1, 2, 4, 8):
            feats = []
            for samples in utterances[:batch]:
                f = model.feature_extractor(samples)[:, :-1]
                frames = window_frames(f.shape[-1], window_s)
                feats.append(np.pad(f, ((0, 0), (0, frames - f.shape[-1]))))
            frames = max(f.shape[-1] for f in feats)
            stacked = np.stack([np.pad(f, ((0, 0), (0, frames - f.shape[-1]))) for f in feats]).astype(np.float32)
            model.model.encode(ctranslate2.StorageView.from_array(stacked[:1]))  # warm-up
            started = time.perf_counter()
            for i in range(batch):
                model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(stacked[i : i + 1])))
            one_by_one = time.perf_counter() - started
            started = time.perf_counter()
            model.model.encode(ctranslate2.StorageView.from_array(stacked))
            batched = time.perf_counter() - started
            emit({"window_s": window_s, "batch": batch, "sequential_s": round(one_by_one, 3),
                  "batched_s": round(batched, 3), "speedup": round(one_by_one / batched, 2)})


if __name__ == "__main__":
    main()
