"""One call's text path, the same live and after the call.

Every finished utterance of a call goes through `CallPipeline.final`: its text is masked before anything else
sees it (an agent asking for an identifier arms the customer side to mask the digits that answer), it becomes a
dialogue `Turn` when it is on the agent or customer channel, and the `CallDialogue` pairs questions and answers.
The live path steps the dialogue as finals arrive (on a worker thread, see service/live/assist.py); a recording
replays every turn in endpoint order (`replay`). Pure and synchronous: no event loop, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nlu.assess import Assessor
from nlu.dialogue import CallDialogue, CallSummary, ChecklistItem, DialogueOptions, Speaker, Turn, Verdict
from nlu.pii import IDENTIFIER_ANSWER_S, Redactor, Span, loan_file_identities, preview, requested_identifier
from nlu.report import Report, RiskConfig, build_report
from nlu.types import LoanRecord

#: The channel roles the dialogue knows; other names (a mono mix, `ch2`) get redacted transcripts only.
AGENT, CUSTOMER = "agent", "customer"
ROLES = (AGENT, CUSTOMER)


def assists(channels: Sequence[str]) -> bool:
    """Whether a call with these channel roles can be assessed: it needs an agent and a customer channel."""
    return AGENT in channels and CUSTOMER in channels


def split_roles(text: str) -> tuple[str, ...]:
    """The roles of a recording's channels as a form field or `--channels` gives them: `agent,customer`."""
    return tuple(r.strip() for r in text.split(",") if r.strip())


def roles_problem(roles: Sequence[str], *, any_name: bool = False, both: bool = False) -> str | None:
    """Why `roles`, the role of each channel of a recording in order, cannot be used, to follow the name they were
    given under (`channels`, `--channels`); None when they can. Every channel is named, each name once, and each
    is one of ROLES unless `any_name` (a plain transcript: a mono mix, `ch2`). With `both` the agent and the
    customer are both there (one file holds the whole call)."""
    got = f"(got {','.join(roles) or 'none'})"
    if not roles or not all(roles) or len(set(roles)) != len(roles):
        return (f"must name each channel once, e.g. {','.join(ROLES)} {got}" if any_name else
                f"must be a comma-separated list of {' and '.join(ROLES)}, each once {got}")
    if not any_name and not set(roles) <= set(ROLES):
        return f"must be a comma-separated list of {' and '.join(ROLES)}, each once {got}"
    if both and not assists(roles):
        return f"must name {' and '.join(ROLES)}, each once, in the order of the files' channels {got}"
    return None


@dataclass(frozen=True, slots=True)
class Final:
    """A finished utterance after the text path: masked text, what was masked (character spans of the
    full-width-normalised raw text), and the dialogue turn (None off the agent/customer channels or when empty)."""

    utterance_id: str
    channel: str
    text: str
    masked: tuple[Span, ...]
    turn: Turn | None


class CallRedaction:
    """The redaction of one call's text, one `Redactor` per channel: an agent asking for an identifier arms the
    customer side to mask the digits that answer it. Every text leaving ASR goes through one: a call's
    (`CallPipeline`) and a plain transcription's (`pipeline.transcription`). Pure; call `final` in each channel's
    order."""

    def __init__(self, channels: Sequence[str], loan_file: dict[str, Any] | None = None) -> None:
        names, addresses = loan_file_identities(loan_file)
        self._redactors = {name: Redactor(names, addresses) for name in channels}

    def final(self, channel: str, raw_text: str, start_s: float, end_s: float) -> tuple[str, list[Span]]:
        """The masked text of a finished utterance and what was masked."""
        text, spans = self._redactors[channel].redact(raw_text, start_s, end_s)
        if channel == AGENT and CUSTOMER in self._redactors and (kind := requested_identifier(raw_text)):
            # The customer's next digits answer it: mask them whatever they look like.
            self._redactors[CUSTOMER].expect(kind, end_s + IDENTIFIER_ANSWER_S)
        return text, spans

    def partial(self, channel: str, raw_text: str) -> str:
        """Masked text of a provisional transcript; the channel's redaction state is left as it is."""
        return preview(self._redactors[channel], raw_text)


class CallPipeline:
    """The text side of one call: redaction per channel, turns, the dialogue and, at the end, the report."""

    def __init__(self, call_id: str, channels: Sequence[str], assessor: Assessor,
                 loan_file: dict[str, Any] | None, options: DialogueOptions) -> None:
        self.call_id = call_id
        self.assessor = assessor
        #: Personal data is masked here, before any text leaves the ASR stage (events, dialogue, storage).
        self._redaction = CallRedaction(channels, loan_file)
        self._counts: dict[str, int] = {}
        #: None when the call has no agent and customer channel: transcripts only.
        self.dialogue = (CallDialogue(assessor, LoanRecord.from_mapping(loan_file), options)
                         if assists(channels) else None)
        self.turns: list[Turn] = []
        names_by_topic = {t.id: t.name for t in assessor.script.topics.values()}
        if assessor.script.other is not None:
            names_by_topic[assessor.script.other.id] = assessor.script.other.name
        self.topic_names = names_by_topic

    # -- text ----------------------------------------------------------------------------------------------

    def final(self, channel: str, raw_text: str, start_s: float, end_s: float,
              utterance_id: str | None = None) -> Final:
        """A finished utterance of `channel` (call in each channel's order). `utterance_id` defaults to
        `CHANNEL-N`, N counting this channel's utterances from 1."""
        self._counts[channel] = self._counts.get(channel, 0) + 1
        uid = utterance_id or f"{channel}-{self._counts[channel]}"
        if not raw_text:
            return Final(uid, channel, "", (), None)
        text, spans = self._redaction.final(channel, raw_text, start_s, end_s)
        turn = None
        if channel in ROLES and text:
            speaker: Speaker = "agent" if channel == AGENT else "customer"
            turn = Turn(uid, speaker, text, start_s, end_s)
        return Final(uid, channel, text, tuple(spans), turn)

    def partial(self, channel: str, raw_text: str) -> str:
        """Masked text of a provisional transcript; the channel's redaction state is left as it is."""
        return self._redaction.partial(channel, raw_text)

    # -- dialogue (call from one thread at a time, in endpoint order) --------------------------------------

    def add(self, turn: Turn) -> list[Verdict]:
        """Step the dialogue with a finished turn; returns the verdicts it produced."""
        self.turns.append(turn)
        return self.dialogue.add(turn) if self.dialogue is not None else []

    def tick(self, now_s: float) -> list[Verdict]:
        """The audio clock moved on with nobody speaking: a question unanswered long enough is a silence."""
        return self.dialogue.tick(now_s) if self.dialogue is not None else []

    def silence_due_s(self) -> float | None:
        """Audio time at which the waiting question becomes a silent answer (a cheap read)."""
        return self.dialogue.silence_due_s() if self.dialogue is not None else None

    def finish(self, duration_s: float) -> list[Verdict]:
        """The call ended: a last question left hanging long enough is a silent answer."""
        return self.dialogue.finish(duration_s) if self.dialogue is not None else []

    def replay(self, turns: Sequence[Turn], duration_s: float) -> None:
        """A finished call's turns, all at once (see `CallDialogue.replay`): the post-call path."""
        self.turns.extend(turns)
        if self.dialogue is not None:
            self.dialogue.replay(turns, duration_s)

    def checklist(self) -> tuple[ChecklistItem, ...]:
        return self.dialogue.checklist() if self.dialogue is not None else ()

    def summary(self) -> CallSummary | None:
        return self.dialogue.summary() if self.dialogue is not None else None

    def report(self, duration_s: float, risk: RiskConfig) -> Report:
        """The call's report from the turns and verdicts so far (call after `finish`)."""
        dialogue = self.dialogue or CallDialogue(self.assessor)
        return build_report(self.call_id, self.turns, dialogue, self.assessor, duration_s, risk)
