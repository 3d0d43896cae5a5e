"""Turn pairing across the two channels of a call, and the running checklist of the call script.

`CallDialogue` is fed finished utterances (`Turn`) in the order their speakers stopped talking, and the call's
audio clock (`tick`). It pairs each customer utterance with the agent question before it, assesses the answer as
soon as it arrives, turns a sensitive question left unanswered for the silence timeout into a verdict without
waiting for the next utterance, and keeps the checklist. It is pure: no I/O, no clocks of its own (times are
seconds of call audio), so the live socket and post-call scoring run the same code and get the same labels.

Pairing rules, in audio time:
- a customer utterance answers the latest agent question that *started* before it did (so an answer may overlap
  the end of the question, and an answer that started before a new question belongs to the old one);
- several customer utterances after one question are one multi-part answer: each new part re-assesses the whole
  answer and the new verdict supersedes the old one for that question;
- an agent utterance that is not a question (a statement) ends the answering window; agent backchannels (嗯,
  好的, from `configs/cues.yaml`) do not;
- a question outside the script is topic `other` (nlu/questions.py): its answer, or silence, is assessed for
  non-answers and reported, but it is not on the checklist;
- a question naming two topics opens both, each assessed on the same answer;
- the agent re-asking a topic opens a new question; its answer's verdict supersedes earlier ones for the topic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from nlu.assess import Assessor, PromptLimiter
from nlu.questions import OTHER_TOPIC, ask
from nlu.types import Assessment, Label, LoanRecord

Speaker = Literal["agent", "customer"]
ItemState = Literal["not_asked", "asked", "clear", "vague"]

_PUNCT = re.compile(r"[\s，。！？、,.!?~…：:；;\"'“”‘’（）()]+")


@dataclass(frozen=True, slots=True)
class Turn:
    """A finished utterance as the dialogue sees it (ASR text, audio times of the call)."""

    utterance_id: str
    speaker: Speaker
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """One assessment of the answer to one topic of one question.

    `answer_end_s` is the audio time the verdict became possible: the end of the (last part of the) answer, or
    the question's end plus the silence timeout. `prompt` is the agent prompt after rate limiting (None when
    the answer is clear, when the limiter held it back, or when it repeats the previous verdict's label).
    """

    question_utterance_id: str
    answer_utterance_ids: tuple[str, ...]
    topic: str
    assessment: Assessment
    answer_end_s: float
    prompt: str | None
    revision: int


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    """Where one topic of the call script stands: not asked, asked and waiting, answered clearly, or vaguely."""

    topic: str
    name: str
    state: ItemState
    label: Label | None = None
    mismatch: bool = False
    times_asked: int = 0


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """A prompt shown to the agent, and whether the agent went back to the topic afterwards."""

    topic: str
    label: Label
    text: str
    at_s: float
    followed_up: bool
    #: The question the prompted answer answered (with `topic`, what names the prompt: an agent's verdict on it,
    #: issue #31); None in reports stored before it was kept.
    question_utterance_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallSummary:
    """The end-of-call view: checklist, the last verdict per topic, the prompts and the agent's follow-ups."""

    checklist: tuple[ChecklistItem, ...]
    verdicts: tuple[Verdict, ...]
    prompts: tuple[PromptRecord, ...]
    answers: int
    vague_answers: int
    mismatches: int
    coverage: float
    #: The customer declined the opening (不方便, 在开车): the call is to be made again.
    callback_requested: bool = False


@dataclass(frozen=True, slots=True)
class DialogueOptions:
    """Timing of the live assistance."""

    #: Customer silence after a question that makes an unanswered question a verdict (seconds of audio).
    silence_timeout_s: float = 5.0
    #: At most one prompt per this many seconds of call audio. Short: in a follow-up call each question gets its
    #: own answer a few seconds apart, and every vague one deserves its prompt; this only stops bursts.
    prompt_interval_s: float = 3.0
    #: How far (s) an answer may start before the question it answers has started (crosstalk at turn change).
    overlap_s: float = 0.3


@dataclass
class _Question:
    turn: Turn
    topics: tuple[str, ...]
    answers: list[Turn] = field(default_factory=list)
    silence_verdict: bool = False
    #: Audio time of the next substantive agent utterance: customer speech after it is not an answer.
    closed_at: float | None = None


class CallDialogue:
    """The NLU state of one call: questions, answers, verdicts, checklist. Feed it in endpoint order."""

    def __init__(self, assessor: Assessor, loan: LoanRecord | None = None,
                 options: DialogueOptions | None = None) -> None:
        self.assessor = assessor
        self.loan = loan
        self.options = options or DialogueOptions()
        self._limiter = PromptLimiter(self.options.prompt_interval_s)
        self._questions: list[_Question] = []
        self._unpaired: list[Turn] = []
        self._latest: dict[str, Verdict] = {}  # topic -> the verdict that stands
        self._by_question: dict[tuple[str, str], Verdict] = {}  # (question id, topic) -> latest verdict
        self._asked: dict[str, int] = {}
        self._prompts: list[PromptRecord] = []
        self._backchannels = frozenset(assessor.cues.backchannels)
        self._opening_at: float | None = None  # end of an opening question still waiting for its answer
        self._callback = False
        role = loan.role if loan else None
        # The checklist: every topic of the script for this role (role-specific topics only for that role).
        self._topics = [t for t in assessor.script.topics.values()
                        if not t.roles or (role is not None and role in t.roles)]

    # -- input -------------------------------------------------------------------------------------------

    def add(self, turn: Turn) -> list[Verdict]:
        """A finished utterance. Returns the verdicts it produced (possibly superseding earlier ones)."""
        if not turn.text.strip():
            return []
        if turn.speaker == "agent":
            return self._agent(turn)
        return self._customer(turn)

    def tick(self, now_s: float, customer_busy: bool = False) -> list[Verdict]:
        """The call's audio clock moved to `now_s`. A question unanswered for the silence timeout becomes a
        verdict, unless the customer is speaking right now (`customer_busy`: an answer is on its way)."""
        due = self.silence_due_s()
        if due is None or customer_busy or now_s < due:
            return []
        return self._silence(self._questions[-1], due)

    def silence_due_s(self) -> float | None:
        """Audio time at which the waiting question becomes a silent non-answer; None when none is waiting."""
        if not self._questions:
            return None
        question = self._questions[-1]
        if question.answers or question.silence_verdict or question.closed_at is not None:
            return None
        return question.turn.end_s + self.options.silence_timeout_s

    def finish(self, end_s: float) -> list[Verdict]:
        """The call ended at `end_s` (audio): a last question left hanging long enough is a silent answer."""
        return self.tick(end_s)

    def replay(self, turns: Sequence[Turn], end_s: float) -> None:
        """A finished call, fed as the live path would have: in the order utterances ended, with the clock at
        each utterance's start before it (so a silence timer expires exactly when it would have live)."""
        for turn in sorted(turns, key=lambda t: (t.end_s, t.start_s)):
            self.tick(turn.start_s)
            self.add(turn)
        self.finish(end_s)

    # -- state -------------------------------------------------------------------------------------------

    def checklist(self) -> tuple[ChecklistItem, ...]:
        """One item per topic of the script that applies to this call, in script order."""
        items = []
        for topic in self._topics:
            verdict = self._latest.get(topic.id)
            asked = self._asked.get(topic.id, 0)
            if not topic.checklist and not asked and verdict is None:
                continue  # asked only in some calls: listed once asked
            if verdict is not None:
                label = verdict.assessment.label
                mismatch = verdict.assessment.mismatch is not None
                state: ItemState = "clear" if label == "clear" and not mismatch else "vague"
                items.append(ChecklistItem(topic.id, topic.name, state, label, mismatch, asked))
            else:
                items.append(ChecklistItem(topic.id, topic.name, "asked" if asked else "not_asked",
                                           times_asked=asked))
        return tuple(items)

    def answers(self) -> tuple[Verdict, ...]:
        """The verdict that stands for every (question, topic) of the call, in the order the questions came."""
        order = {q.turn.utterance_id: i for i, q in enumerate(self._questions)}
        return tuple(sorted(self._by_question.values(), key=lambda v: (order.get(v.question_utterance_id, 0),
                                                                       v.topic)))

    def summary(self) -> CallSummary:
        checklist = self.checklist()
        verdicts = tuple(self._latest[t.id] for t in self._topics if t.id in self._latest)
        vague = sum(1 for v in verdicts if v.assessment.label != "clear")
        mismatches = sum(1 for v in verdicts if v.assessment.mismatch is not None)
        asked = sum(1 for item in checklist if item.state != "not_asked")
        return CallSummary(checklist, verdicts, tuple(self._prompts), len(verdicts), vague, mismatches,
                           round(asked / len(checklist), 3) if checklist else 0.0, self._callback)

    # -- pairing -----------------------------------------------------------------------------------------

    def _agent(self, turn: Turn) -> list[Verdict]:
        role = self.loan.role if self.loan else None
        # Every topic the question asks ("金额和期限分别是多少？" opens both; a figure the agent states is context,
        # not a question: nlu/questions.py), or `other` for a question outside the script.
        asked = ask(turn.text, self.assessor.script, role)
        topics = asked.topics
        self._opening_at = turn.end_s if asked.opening else None
        verdicts: list[Verdict] = []
        if not topics and self._is_backchannel(turn.text):
            return []
        previous = self._questions[-1] if self._questions else None
        if previous is not None and previous.closed_at is None:
            # A question the customer never answered, left for longer than the timeout before the agent went
            # on, is a silent answer even when no tick came in between (post-call scoring has no ticks).
            if (not previous.answers and not previous.silence_verdict
                    and turn.start_s - previous.turn.end_s >= self.options.silence_timeout_s):
                verdicts += self._silence(previous, previous.turn.end_s + self.options.silence_timeout_s)
            previous.closed_at = turn.start_s
        if not topics:
            return verdicts
        for topic in topics:
            if topic != OTHER_TOPIC:
                self._asked[topic] = self._asked.get(topic, 0) + 1
                self._mark_followed_up(topic, turn.start_s)
        question = _Question(turn, topics)
        self._questions.append(question)
        # Customer speech that reached us before this question (finals can finish out of order).
        early = [t for t in self._unpaired if t.start_s + self.options.overlap_s >= turn.start_s]
        self._unpaired = [t for t in self._unpaired if t not in early]
        for answer in early:
            verdicts += self._answer(question, answer)
        return verdicts

    def _is_backchannel(self, text: str) -> bool:
        parts = [p for p in _PUNCT.split(text) if p]
        return bool(parts) and all(p in self._backchannels for p in parts)

    def _customer(self, turn: Turn) -> list[Verdict]:
        if self._opening_at is not None and turn.start_s + self.options.overlap_s >= self._opening_at and any(
                w in turn.text for w in self.assessor.script.decline):
            self._callback = True  # 您好…方便吗？ 不方便，我在开车: call back, nothing to assess
        question = self._question_for(turn)
        if question is None:
            self._unpaired = [*self._unpaired[-4:], turn]
            return []
        return self._answer(question, turn)

    def _question_for(self, turn: Turn) -> _Question | None:
        for question in reversed(self._questions):
            if question.turn.start_s <= turn.start_s + self.options.overlap_s:
                if question.closed_at is not None and turn.start_s >= question.closed_at:
                    return None  # the agent moved on before this was said: not an answer to anything
                return question
        return None

    def _answer(self, question: _Question, turn: Turn) -> list[Verdict]:
        question.answers.append(turn)
        question.answers.sort(key=lambda t: t.start_s)
        text = "，".join(t.text.strip("，。 ") for t in question.answers)
        ids = tuple(t.utterance_id for t in question.answers)
        end_s = max(t.end_s for t in question.answers)
        verdicts = []
        for topic in question.topics:
            assessment = self.assessor.assess(question.turn.text, text, self.loan, topic=topic)
            verdicts.append(self._record(question, topic, ids, assessment, end_s))
        return verdicts

    def _silence(self, question: _Question, at_s: float) -> list[Verdict]:
        question.silence_verdict = True
        verdicts = []
        for topic in question.topics:
            assessment = self.assessor.assess(question.turn.text, "", self.loan,
                                              silence_s=self.options.silence_timeout_s, topic=topic)
            verdicts.append(self._record(question, topic, (), assessment, at_s))
        return verdicts

    def _record(self, question: _Question, topic: str, ids: tuple[str, ...], assessment: Assessment,
                end_s: float) -> Verdict:
        key = (question.turn.utterance_id, topic)
        before = self._by_question.get(key)
        prompt = None
        repeats = before is not None and before.assessment.label == assessment.label and (
            (before.assessment.mismatch is None) == (assessment.mismatch is None))
        if assessment.prompt and not repeats and self._limiter.allow(end_s):
            prompt = assessment.prompt
            self._prompts.append(PromptRecord(topic, assessment.label, prompt, end_s, False,
                                             question.turn.utterance_id))
        verdict = Verdict(question.turn.utterance_id, ids, topic, assessment, end_s, prompt,
                          before.revision + 1 if before else 0)
        self._by_question[key] = verdict
        self._latest[topic] = verdict
        return verdict

    def _mark_followed_up(self, topic: str, at_s: float) -> None:
        self._prompts = [
            replace(p, followed_up=True)
            if p.topic == topic and not p.followed_up and p.at_s <= at_s else p
            for p in self._prompts
        ]
