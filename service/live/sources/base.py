"""What every source of live audio turns its input into, and the interface it does it through.

A source (the bank's switch on the native socket, Twilio Media Streams, the console's demo replay) reads its own
input format and returns the same typed records: `CallStart` (the start parameters: audio format, channel roles,
loan file, agent; and a token when the protocol carries one), `AudioChunk` (float32 audio of every channel or of
one, at a stated sample rate) and `CallEnd`. The socket handling and the live session consume only these, so a
new transport is one new source and no new branch anywhere else (the idea of pipecat's frame serializers).

Sources are pure: no socket, no event loop, no web framework; a malformed input raises `ServiceError` with the
code and message the client is told.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import numpy as np

from service.protocol import StartMessage

#: One websocket message as a socket source reads it: a text frame or a binary frame.
WireFrame = str | bytes

FrameT = TypeVar("FrameT", contravariant=True)


@dataclass(frozen=True, slots=True)
class CallStart:
    """The call begins: its start parameters, and the token the protocol carried (None: the socket's header or
    ticket authenticates it)."""

    start: StartMessage
    token: str | None = None


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Float32 audio at `sample_rate_hz`: every channel at once (`channel` None, `samples` of shape
    (channels, n)) or one channel by its index in the start's `channels` (`samples` of shape (n,))."""

    samples: np.ndarray
    sample_rate_hz: int
    channel: int | None = None

    @property
    def duration_s(self) -> float:
        """Seconds of audio in the chunk."""
        return self.samples.shape[-1] / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class CallEnd:
    """The source ended the call on purpose (a stop message, the end of a recording), as opposed to a hang-up
    without a word (a dropped socket), which the transport notices itself."""


SourceRecord = CallStart | AudioChunk | CallEnd


class AudioSource(ABC, Generic[FrameT]):
    """Turns one call's input, frame by frame and in order, into `SourceRecord`s. One instance per call: a
    source may keep state (whether the call started, a track's clock)."""

    #: Whether the credentials arrive inside the start (Twilio cannot send a header); otherwise the transport
    #: authenticates before it reads anything.
    token_in_start: ClassVar[bool] = False
    #: Whether the start must come within the transport's start timeout even while other frames keep arriving.
    start_deadline: ClassVar[bool] = False

    @abstractmethod
    def read(self, frame: FrameT) -> list[SourceRecord]:
        """What one frame means for the call, in order; empty for a frame that carries nothing for it. Raises
        `ServiceError` for a frame that breaks the protocol."""
