"""Errors raised by `asr`.

All derive from `AsrError`, so a caller can catch one type at the boundary (the CLI maps them to exit code 2,
the HTTP layer to a 4xx) and still tell the cases apart:

- `AudioDecodeError`: the input is not audio we can read (empty, non-audio, truncated, corrupt).
- `AudioLimitError`: the input is audio but exceeds a configured bound (duration, channels, size).
- `ModelUnavailableError`: the configured Whisper model cannot be found offline; the message says what to install.
- `UnsupportedLanguageError`: a caller asked to decode in a language the loaded model does not know.
"""


class AsrError(Exception):
    """Base class of every error `asr` raises on purpose."""


class AudioDecodeError(AsrError):
    """The input cannot be decoded as audio."""


class AudioLimitError(AsrError):
    """The input is valid audio but exceeds a configured limit."""


class ModelUnavailableError(AsrError):
    """The configured speech model is not available on this machine."""


class UnsupportedLanguageError(AsrError):
    """A decoding language the loaded speech model does not know."""
