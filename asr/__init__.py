"""Speech side of huifang: audio decoding, offline Whisper provisioning and Mandarin transcription.

`asr` knows audio and speech only. It never reads the environment and never imports `service`; callers hand it
plain option records (`AsrOptions`, `DecodeLimits`) and get plain records back (`Utterance`).
"""

from asr.errors import AsrError, AudioDecodeError, AudioLimitError, ModelUnavailableError
from asr.types import AsrOptions, DecodedAudio, DecodeLimits, Utterance, Word

__all__ = [
    "AsrError",
    "AsrOptions",
    "AudioDecodeError",
    "AudioLimitError",
    "DecodeLimits",
    "DecodedAudio",
    "ModelUnavailableError",
    "Utterance",
    "Word",
]
