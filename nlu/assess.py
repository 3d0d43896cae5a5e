"""Answer assessment: was the customer's answer clear, missing (omission), hedged (unclear) or evasive?

`Assessor.assess(question, answer, ...)` is the Python API used by the live pipeline and post-call scoring;
`python -m nlu.assess [FILE]` reads JSON lines `{"question","answer"[,"loan_file","silence_s","topic"]}` and
writes each back with the verdict added.

Answerhood first: an answer is `clear` only on positive evidence that it gives what was asked — the figure for
figure questions, an explicit yes/no or consent for polar questions, a concrete statement (`answer_terms` of the
topic) for free-text ones. Without that evidence it is vague, and only then is the kind decided: omission (does
not have it), unclear (hedged, approximate, relative, conditional), evasive (refusal, counter-question, topic
change, stalling, hostility, silence). The explicit rules (cue lexicons in `configs/cues.yaml`, the slot each
topic of `configs/call_script.yaml` expects, the loan record) find the evidence; the learned part
(`nlu/learned.py`: a pretrained multilingual sentence encoder with a small head, reading only the question and
the answer) weighs in where the rules are not decisive, and alone decides the kind of a non-answer that carries
no known cue word. The prompt for the agent comes from the script's templates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

from nlu.polar import Echo, assent, echo, polar_question
from nlu.questions import OTHER_TOPIC, ask, contains_keyword, pinyin_key
from nlu.script import CallScript, Cues, Topic, load_cues, load_script
from nlu.slots import A_NOT_A, decimal_equal, extract_slot, word_boundaries
from nlu.types import LABELS, Assessment, Evidence, Label, LoanRecord, Mismatch, Slot

_FIGURES = ("amount_yuan", "years", "day", "percent")
_COUNTER_QUESTION = re.compile(r"(什么|干嘛|干什么|为什么|怎么|谁|哪|啥)[^，。]*[？?吗呢嘛啊]|[？?]$")
#: How far a stated figure may be from the record before it is a contradiction (people round money).
_TOLERANCE = {"amount_yuan": 0.02, "monthly_yuan": 0.03, "rate_pct": 0.005, "term_years": 0.0, "repay_day": 0.0}
_VAGUE: tuple[Label, ...] = ("omission", "unclear", "evasive")
_KNOWING = ("知道", "了解", "清楚", "明白")
_CONDITIONALS = ("要是", "如果", "只要", "万一")
_QUESTION_CLAUSE = re.compile(
    r"[^，。？！,.?!]*[？?]|[^，。？！,.?!]*[吗呢嘛][，。,.]?$|[^，。？！,.?!]*(哪|谁|什么|啥|怎么|为什么|干嘛)[^，。？！,.?!]*")
#: X是X，但… (知道是知道，但…; 同意是同意，但…): a concession that takes back what it grants.
_CONCESSION = re.compile(r"([^\W是对好行]\w?)是\1(?=了|[，,…。]|但|可|不过|只是)")
#: 等发了工资再说 / 等他回来就知道了: waiting for an uncertain event before answering or acting.
_WAIT_FOR = re.compile(r"等[^，。！？,.!?]{1,10}?(?:了|完|到|下来|回来|以后|之后)?(?:再|就|才)")
#: 不是…了吗 / 不是已经…吗: a rhetorical question that asserts what it holds (a completed act).
_RHETORICAL = re.compile(r"不是([^，。！？,.!?]*?(?:已经|早就|早)?[^，。！？,.!?]*?了)(?:吗|嘛)[？?]?")
#: 不是三十年，是二十年: the figure after the contrast is the answer.
_CONTRAST = re.compile(r"不是[^，。！？]{1,12}[，,]\s*(?:而)?是")
#: The rules' confidence in a verdict they had no evidence for (`no_evidence`, label `unclear`).
NO_EVIDENCE_CONFIDENCE = 0.4
#: What in an answer counts as giving what was asked (`RuleView.answered`).
Answered = Literal["figure", "approx", "polar", "statement"]


class LearnedModel(Protocol):
    """The learned half of the assessment (nlu/learned.py, or a transformers classifier): label probabilities
    from the question and answer text alone, and a version that identifies its weights."""

    version: str

    def probabilities(self, question: str, answer: str) -> dict[Label, float]: ...

    def explain(self, question: str, answer: str, label: Label) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class AssessOptions:
    """Thresholds of the assessment."""

    #: Silence (s) after a question that, with no answer, counts as not answering.
    silence_timeout_s: float = 5.0
    #: Weight of the learned model against the rules where the rules are not decisive (confidence at most
    #: `classifier_below`); where the answer gives no evidence at all the learned model alone picks the kind.
    #: Chosen on the own corpus' dev split (bench/nlu_eval.py; docs/nlu.md): consulting the learned model on
    #: answers where a cue word already decided lowered macro-F1 there (0.851 -> 0.83).
    classifier_weight: float = 0.5
    classifier_below: float = 0.7
    #: Where the rules find no evidence either way, the learned label stands when its probability reaches this;
    #: below it the answer is `unclear` (`no_evidence`). Chosen on the own corpus' dev split (bench/nlu_eval.py).
    learned_sure: float = 0.6


@dataclass(frozen=True, slots=True)
class RuleView:
    """What the rules saw in an answer, before deciding a label."""

    #: The slot kind the question asks for (None: question not recognised).
    expected: str | None
    #: Cue words found, per label they point to (after the customer's last self-correction, if any).
    hits: dict[str, list[str]]
    #: The counter-question asked back (问这个干嘛？), or "".
    counter: str
    slot: Slot | None
    #: The positive evidence that the answer gives what was asked, or None.
    answered: Answered | None = None
    #: The part of the answer the view was taken from (after the last self-correction).
    heard: str = ""
    #: The yes/no takes up the question's own predicate (还了 to 还了吗), not a yes/no word about anything.
    echoed: bool = False


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """The rules' label, how sure they are, whether it is final (a figure, the loan record), and why."""

    label: Label
    confidence: float
    decisive: bool
    evidence: tuple[Evidence, ...]


@dataclass
class Assessor:
    """Holds the call script, cue lexicons and the optional learned model; `assess` is pure given them."""

    script: CallScript = field(default_factory=load_script)
    cues: Cues = field(default_factory=load_cues)
    options: AssessOptions = field(default_factory=AssessOptions)
    #: Optional learned second opinion (nlu/learned.py); used per `options.classifier_weight`.
    classifier: LearnedModel | None = None
    _version: str | None = field(default=None, init=False, repr=False)

    @property
    def version(self) -> str:
        """Identifies what produced a verdict: the learned model's weights, the script, the lexicons and the
        options, hashed. Carried by every assessment and report so a score can be traced and re-run."""
        if self._version is None:
            digest = hashlib.sha256(repr((self.script, self.cues, self.options)).encode("utf-8")).hexdigest()[:10]
            learned = self.classifier.version if self.classifier is not None and self._weight > 0 else "rules"
            self._version = f"{learned}+{digest}"
        return self._version

    @property
    def _weight(self) -> float:
        return self.options.classifier_weight if self.classifier is not None else 0.0

    def topics_of(self, question: str, loan: LoanRecord | None = None, topic: str | None = None) -> tuple[
            Topic | None, tuple[str, ...]]:
        """The topic a (question, answer) pair is assessed under and every topic the question asks; `topic`
        forces the first (the dialogue assesses each topic of a two-topic question on its own)."""
        asked = ask(question, self.script, loan.role if loan else None).topics
        known = topic in self.script.topics or topic == OTHER_TOPIC
        chosen = topic if known else (asked[0] if asked else None)
        if chosen == OTHER_TOPIC:
            return self.script.other, asked
        return (self.script.topics.get(chosen) if chosen else None), asked

    def assess(self, question: str, answer: str, loan: LoanRecord | None = None, silence_s: float | None = None,
               topic: str | None = None) -> Assessment:
        """Assess one answer. `topic` skips question detection; `silence_s` is how long the customer stayed
        silent after the question when `answer` is empty."""
        spec, asked = self.topics_of(question, loan, topic)
        answer = clause_breaks(answer.strip())
        if not answer or _is_silence_marker(answer):
            return self._silence(spec, loan, silence_s, asked)

        view = self.rule_view(answer, spec, question)
        rules = self.rule_verdict(view, spec, loan)
        label, confidence, evidence = rules.label, rules.confidence, list(rules.evidence)

        unsure = any(e.kind == "no_evidence" for e in rules.evidence)
        if self.classifier is not None and self._weight > 0 and unsure:
            # No evidence either way in the rules: the learned part decides where it is sure, any label.
            probs = self.classifier.probabilities(question, answer)
            vague = {k: probs[k] for k in _VAGUE}
            kind = max(_VAGUE, key=vague.__getitem__)
            best: Label | None = "clear" if probs["clear"] >= self.options.learned_sure else (
                kind if probs["clear"] <= 1 - self.options.learned_sure else None)
            if best is not None:
                label = best
                confidence = round(probs[label] / (1.0 if label == "clear" else sum(vague.values()) or 1.0), 3)
                evidence = [e for e in evidence if e.kind != "no_evidence"]
                evidence.append(Evidence("learned", f"p={probs[label]:.2f}", label))
                evidence.extend(Evidence("example", text, label) for text in self.classifier.explain(
                    question, answer, label))
        elif self.classifier is not None and self._weight > 0 and not rules.decisive and (
            confidence <= self.options.classifier_below
        ):
            probs = self.classifier.probabilities(question, answer)
            label, confidence = _fuse(rules, probs, self._weight, answered=view.answered is not None)
            evidence.append(Evidence("learned", f"p={probs[label]:.2f}", label))
            evidence.extend(Evidence("example", text, label) for text in self.classifier.explain(
                question, answer, label))

        mismatch = self._mismatch(spec, view.slot, loan) if label == "clear" else None
        if mismatch is not None:
            evidence.append(Evidence("mismatch", f"{mismatch.field}: {mismatch.stated:g} vs {mismatch.on_file:g}"))
        prompt = self._prompt(spec, label, loan, view.slot, mismatch)
        return Assessment(spec.id if spec else None, label, confidence, tuple(evidence),
                          (view.slot,) if view.slot else (), mismatch, prompt, asked, self.version)

    def rule_view(self, answer: str, spec: Topic | None, question: str = "") -> RuleView:
        """What the cue lexicons and slot extraction find in a (non-empty) answer to a question of `spec`
        (`question`: the agent's words, for a yes/no answered by taking up the question's verb)."""
        kind = spec.slot if spec is not None and spec.id != OTHER_TOPIC else None
        heard = self._after_correction(answer, kind)
        hits = {label: self._cues(heard, label) for label in ("evasive", "omission", "unclear")}
        deferred = self._cues(heard, "deferral")
        if deferred:  # not having it for a fact; putting off one's own consent (unless it is not theirs to give)
            hits["evasive" if kind == "consent" and not hits["omission"] else "omission"] += deferred
        # Across lexicons the longer word wins: 不方便查 (omission) over the 不方便 (evasive) inside it.
        for label, words in hits.items():
            others = [w for other, ws in hits.items() if other != label for w in ws]
            hits[label] = [w for w in words if not any(w != o and w in o for o in others)]
        if (waiting := _WAIT_FOR.search(heard)) is not None:
            hits["unclear"] = [*hits["unclear"], waiting.group(0)]  # 等发了工资再说: a condition, no commitment
        if (conceded := _CONCESSION.search(heard)) is not None:
            hits["unclear"] = [*hits["unclear"], conceded.group(0)]
        found = _COUNTER_QUESTION.search(heard)
        counter = found.group(0) if found else ""
        # A yes/no word inside a question asked back (你们不是都有吗？) answers nothing; a figure does (五年啊，
        # 怎么了不对吗？).
        if counter and (asserted := _RHETORICAL.search(heard)) is not None:
            # 昨晚不是已经还钱了吗: 不是…吗 asks back to assert; what it asserts is said, not asked.
            counter, heard = "", heard[: asserted.start()] + asserted.group(1) + heard[asserted.end():]
        stated = _QUESTION_CLAUSE.sub("，", heard) if counter else heard
        polar = kind in ("yes_no", "consent")
        slot = extract_slot(kind, stated if polar else heard, self.cues) if kind else self._any_fact(stated)
        answered: Answered | None = None
        echoed = False
        if slot is not None and slot.kind in _FIGURES:
            if slot.value is not None or slot.approximate:
                answered = "approx" if slot.approximate else "figure"  # 三点几: an approximation, no value
        elif slot is not None and slot.kind in ("yes_no", "consent") and slot.value is not None:
            answered = "polar"
        asked = polar_question(question)
        if polar and asked is not None and slot is not None and (taken := echo(stated, asked, self.cues.acts)):
            # 我还了，不会还在给我收利息吧: the question's own verb taken up decides over a yes/no word elsewhere.
            slot, answered, echoed = Slot(slot.kind, taken.value, False, taken.text), "polar", True
        if answered is None and asked is not None:
            # 还了吗？ 还了 / 没还; 有没有逾期？ 没逾期过; 贷款是八十万，对吧？ 对: a yes/no in Mandarin's own way.
            # For a figure or free-text topic only the question's own verb (or bare assent) answers it: a yes/no
            # word about something else (钱都按时还了 to 月供金额您清楚吗) does not give the figure.
            taken_up = assent(heard) or echo(stated, asked, self.cues.acts) or self._bare_yes_no(heard)
            if taken_up is not None:
                slot = Slot("consent" if kind == "consent" else "yes_no", taken_up.value, False, taken_up.text)
                answered, echoed = "polar", True
        if slot is not None and answered == "polar":
            # 怎么可能 (no way) is a no, not the hedge 可能 inside it; nor is a possibility denied (莫得可能, 没可能).
            hits["unclear"] = [w for w in hits["unclear"] if not (w != slot.text and w in slot.text) and not (
                slot.value is False and re.search(rf"(?:{re.escape(slot.text)}|[没不无])\s*{re.escape(w)}", heard))]
        risks = [t for t in (spec.risk_terms if spec is not None else ()) if t in stated]
        if risks and answered is None:
            answered = "statement"
            if all(w in self.cues.conditional_hedges for w in hits["unclear"]):
                hits["unclear"] = []  # 手头紧得很，下个月都难说: the uncertainty is the risk, stated
        terms = (*spec.answer_terms, *spec.risk_terms) if spec is not None else ()
        if terms:
            # The topic's own statements outrank the generic hedge lexicon: 手头有点紧 answers the repayment-risk
            # question (有点紧 is a term there), where elsewhere 有点紧 hedges (余额有点紧).
            said = [t for t in terms if t in stated]
            hits["unclear"] = [w for w in hits["unclear"] if not any(w in t for t in said)]
        if answered is None and self._has_term(stated, terms):
            answered = "statement"
        if answered is None and kind == "text" and (
                figure := self._any_fact(stated, ("amount_yuan",))) is not None and figure.value is not None:
            answered = "approx" if figure.approximate else "statement"  # 一个月八千: a concrete income
        if answered == "statement" and kind == "text" and hits["unclear"] and self._clean_statement(stated, terms) and (
                not any(w in stated for w in self.cues.conditional_hedges)):
            # 没租，空着，我偶尔周末过去打扫一下 / 我做生意的，一年能挣三十万左右: a concrete statement in a clause
            # of its own, unhedged; the hedges elsewhere qualify details, and the statement stands.
            hits["unclear"] = []
        if answered is not None and (both := self._equivocation(stated, terms)):
            hits["unclear"] = [*hits["unclear"], both]  # 说稳定也稳定，说不稳定也不稳定
        return RuleView(
            expected=kind,
            hits=hits,
            counter=counter,
            slot=slot,
            answered=answered,
            heard=heard,
            echoed=echoed,
        )

    def rule_verdict(self, view: RuleView, spec: Topic | None, loan: LoanRecord | None) -> RuleVerdict:
        """The rules' decision on a rule view: answerhood first, then the kind of a vague answer."""
        hits, slot, answered = view.hits, view.slot, view.answered
        evidence: list[Evidence] = []
        for cue_label, words in hits.items():
            evidence.extend(Evidence("cue", w, cue_label) for w in words)  # type: ignore[arg-type]
        if slot is not None:
            evidence.append(Evidence("slot", slot.text))

        def verdict(label: Label, confidence: float, decisive: bool = False) -> RuleVerdict:
            return RuleVerdict(label, confidence, decisive, tuple(evidence))

        if answered == "figure" and not (slot is not None and self._cues(_clause_of(view.heard, slot.text), "unclear")):
            # The figure was given, whatever the tone; a hedge elsewhere (估计你们要问，我看了一眼，二千六) does
            # not make it vague, one in its own clause (大概二千六吧) does.
            return verdict("clear", 0.9, decisive=True)
        if spec is None or spec.id == OTHER_TOPIC:
            return self._other(view, evidence)
        # 谁能保证呢 asks back, but as a hedge; 我要是不说会怎么样？ asks back, its condition no hedge.
        hedged = [w for w in hits["unclear"] if w not in _CONDITIONALS] or hits["omission"]
        if view.echoed and slot is not None and not hedged and self._stands_alone(view, slot.text):
            # 够啊，哪个月没扣上过，你们自己看记录嘛: the answer is given in a clause of its own, unhedged; a
            # complaint or a question asked back in another clause does not take it back (as with a figure).
            return verdict("clear", 0.8)
        if hits["evasive"] or (view.counter and answered is None and not hedged):
            if view.counter and not hits["evasive"]:
                evidence.append(Evidence("counter_question", view.counter, "evasive"))
            return verdict("evasive", 0.9 if hits["evasive"] else 0.75)
        knows_part = answered == "polar" and slot is not None and slot.value is True and slot.text in _KNOWING
        if hits["omission"] and hits["unclear"] and knows_part:
            return verdict("unclear", 0.75)  # 大概知道一点吧，具体的不太清楚: knows a part, hedged
        if hits["omission"] and answered not in ("figure", "approx"):
            return verdict("omission", 0.9)
        if answered in ("figure", "approx") and slot is not None:
            rounded = any(w in view.heard for w in self.cues.rounding) and set(hits["unclear"]) <= set(
                self.cues.rounding)  # only rounding words (左右, 出头): not a range, a bound or an either-or
            if rounded and self._mismatch(spec, slot, loan, loose=True) is False:
                # 四千二左右 when the record says 4,200: the customer knows the figure, rounding aside.
                return verdict("clear", 0.8, decisive=True)
            return verdict("unclear", 0.85)
        if hits["unclear"]:
            return verdict("unclear", 0.75)
        if answered == "polar":
            softened = slot is not None and view.heard[view.heard.find(slot.text) + len(slot.text):][:1] == "吧"
            settling = _clause_of(view.heard, slot.text) if slot is not None else view.heard
            ends_soft = settling.rstrip("。！!，, ").endswith(self.cues.hedge_particles)
            if (ends_soft or softened) and spec.slot in ("yes_no", "consent"):
                return verdict("unclear", 0.7)  # 好吧 / 能吧: consent softened into a hedge
            return verdict("clear", 0.85)
        if answered == "statement":
            return verdict("clear", 0.75)
        # No evidence that the answer gives what was asked, and none that it does not: not evasive by default.
        # The learned part decides where it is sure (`Assessor.assess`); where it is not, the answer is
        # `unclear` for want of evidence, and the agent asks again.
        evidence.append(Evidence("no_evidence", spec.slot, "unclear"))
        return verdict("unclear", NO_EVIDENCE_CONFIDENCE)

    def _bare_yes_no(self, answer: str) -> Echo | None:
        """A first clause that is a yes/no word and nothing else (唔系，浮动的 / 对，没变): it answers a yes/no
        question whatever the topic."""
        first = re.split(r"[，。！？；,.!?;…~]", answer, maxsplit=1)[0].strip()
        first = first.lstrip("嗯啊哦呃哎唉").rstrip("的啊呀呢哈嘛嘞滴")
        if first in self.cues.no_words:
            return Echo(first, False)
        if first in self.cues.yes_words:
            return Echo(first, True)
        return None

    def _stands_alone(self, view: RuleView, said: str) -> bool:
        """Whether the clause that says `said` is a statement free of cue words and not itself asked back, with
        nothing in the answer taking it back (a correction, a condition, a concession)."""
        clause = _clause_of(view.heard, said)
        if not clause or clause.rstrip("。！!").endswith(("？", "?", "吗", "嘛", *self.cues.hedge_particles)):
            return False
        if any(self._cues(clause, label) for label in ("evasive", "omission", "unclear", "deferral")):
            return False
        return not any(w in view.heard for w in self.cues.conditional_hedges) and not _CONCESSION.search(
            view.heard) and not self._equivocation(view.heard, ())

    def _other(self, view: RuleView, evidence: list[Evidence]) -> RuleVerdict:
        """A question outside the script, or an utterance not recognised as a question at all (an ASR slip in
        it, say): a non-answer (refusal, counter-question, not knowing) or a hedge is vague, anything else clear."""
        if view.hits["evasive"] or (view.counter and view.answered is None):
            return RuleVerdict("evasive", 0.85, True, tuple(evidence))
        if view.hits["omission"]:
            return RuleVerdict("omission", 0.85, True, tuple(evidence))
        if view.hits["unclear"] or view.answered == "approx":
            return RuleVerdict("unclear", 0.75, True, tuple(evidence))
        # The learned model knows the script's questions, not these: the rules alone decide.
        return RuleVerdict("clear", 0.7, True, tuple(evidence))

    def _silence(self, spec: Topic | None, loan: LoanRecord | None, silence_s: float | None,
                 asked: tuple[str, ...]) -> Assessment:
        waited = silence_s if silence_s is not None else self.options.silence_timeout_s
        evidence = (Evidence("silence", f"{waited:.1f} s without an answer"),)
        # Saying nothing to a question is not answering it, whatever the topic (the label set's definition).
        label: Label = "evasive"
        confidence = 0.8 if waited >= self.options.silence_timeout_s else 0.5
        return Assessment(spec.id if spec else None, label, confidence, evidence, (), None,
                          self._prompt(spec, label, loan, None, None), asked, self.version)

    def _any_fact(self, answer: str, kinds: tuple[str, ...] = ("day", "percent", "years", "amount_yuan",
                                                               "yes_no")) -> Slot | None:
        """With the question not understood (an ASR error in it, say), any stated fact still counts: an answer
        of "每月18号" to an unrecognised question is not an omission."""
        for kind in kinds:
            slot = extract_slot(kind, answer, self.cues)  # type: ignore[arg-type]
            if slot is not None:
                return slot
        return None

    def _after_correction(self, answer: str, kind: str | None) -> str:
        """The part of the answer after the customer's last self-correction (不对，准确说是四千三百二), when it
        still states something; the whole answer otherwise."""
        cut = max((answer.rfind(w) + len(w) for w in self.cues.corrections if w in answer), default=-1)
        contrast = list(_CONTRAST.finditer(answer))
        if contrast:
            cut = max(cut, contrast[-1].end())
        if cut <= 0:
            return answer
        rest = answer[cut:].lstrip("，,。：: ")
        if not rest:
            return answer
        stated = extract_slot(kind, rest, self.cues) if kind else self._any_fact(rest)  # type: ignore[arg-type]
        return rest if stated is not None and stated.value is not None else answer

    def _cues(self, answer: str, label: str) -> list[str]:
        """Cue words of `label` in the answer, longest first; words of three or more characters also as ASR
        homophones (不太清出 for 不太清楚), matched on pinyin as agent questions are."""
        words = sorted(getattr(self.cues, label), key=len, reverse=True)
        found: list[str] = []
        heard: tuple[str, ...] | None = None
        syllables: frozenset[str] = frozenset()
        bounds: frozenset[int] | None = None  # jieba's word boundaries, read once a cue word is found
        for w in words:
            if any(w in longer for longer in found):
                continue
            if w in answer:
                # Not inside a numeral: 万一 in 一万一千五 is not "in case"; and "he does not know" (他不知道)
                # answers a question about him, it is not the customer lacking the fact. Nor inside a question
                # taken up as a question (我明天还行不行: 还 + 行不行, no 还行), nor, for a two-character word,
                # starting inside another word (在出 in 现在出了事: the 在 is 现在's).
                bounds = bounds if bounds is not None else word_boundaries(answer)
                if any(not _inside_numeral(answer, i, len(w)) and not (label == "omission" and _third_person(
                        answer, i)) and not _in_a_not_a(answer, i, len(w)) and (i in bounds or len(w) >= 3)
                       for i in _find_all(answer, w)):
                    found.append(w)
            elif len(w) >= 3:
                if heard is None:
                    heard = pinyin_key(answer)
                    syllables = frozenset(heard)
                # Cheap test first: a homophone match needs all but at most one of the word's syllables.
                if _shares_syllables(w, syllables) and contains_keyword(heard, w):
                    found.append(w)
        return found

    @staticmethod
    def _has_term(answer: str, terms: tuple[str, ...]) -> bool:
        """Whether one of `terms` is in the answer; terms of two or more characters also as ASR homophones."""
        if any(term in answer for term in terms):
            return True
        heard = pinyin_key(answer)
        syllables = frozenset(heard)
        return any(len(term) >= 2 and _shares_syllables(term, syllables) and contains_keyword(heard, term)
                   for term in terms)

    def _clean_statement(self, answer: str, terms: tuple[str, ...]) -> bool:
        """Whether some clause holds an answer term and no hedge."""
        return any(any(t in clause for t in terms) and not self._cues(clause, "unclear")
                   and not clause.rstrip("。！!").endswith(self.cues.hedge_particles)
                   for clause in re.split(r"[，。！？；,.!?;…]", answer) if clause)

    def _equivocation(self, answer: str, terms: tuple[str, ...]) -> str:
        """A word said both ways (稳定 … 不稳定): the answer commits to neither."""
        for word in (*terms, *self.cues.yes_words):
            if len(word) < 2 or word[0] in "不没":
                continue
            starts = [m.start() for m in re.finditer(re.escape(word), answer)]
            negated = [i for i in starts if i > 0 and answer[i - 1] in "不没"]
            if negated and len(negated) < len(starts):
                return f"{word}/不{word}"
        return ""

    @staticmethod
    def _mismatch(spec: Topic | None, slot: Slot | None, loan: LoanRecord | None, loose: bool = False) -> Any:
        """A `Mismatch` (or, with `loose`, True) when the slot contradicts the record; None (False) when it
        agrees; None when there is nothing to compare. `loose` allows an approximate figure 5% of slack."""
        if spec is None or slot is None or loan is None or spec.loan_field is None:
            return None
        on_file = getattr(loan, spec.loan_field, None)
        if on_file is None or not isinstance(slot.value, int | float) or isinstance(slot.value, bool):
            return None
        tolerance = max(_TOLERANCE.get(spec.loan_field, 0.0), 0.05 if loose else 0.0)
        agrees = decimal_equal(float(slot.value), float(on_file), tolerance)
        if loose:
            return not agrees
        return None if agrees else Mismatch(spec.loan_field, float(slot.value), float(on_file))

    def _prompt(self, spec: Topic | None, label: Label, loan: LoanRecord | None, slot: Slot | None,
                mismatch: Mismatch | None) -> str | None:
        if label == "clear" and mismatch is None:
            return None
        key = "mismatch" if mismatch is not None else label
        values: dict[str, Any] = {"topic": spec.name if spec else "该问题", "stated": slot.text if slot else ""}
        if loan is not None:
            values.update({
                "amount_wan": _fmt(loan.amount_yuan / 10_000) if loan.amount_yuan else None,
                "term_years": _fmt(loan.term_years), "repay_day": loan.repay_day,
                "monthly_yuan": _fmt(loan.monthly_yuan), "rate_pct": _fmt(loan.rate_pct),
            })
        if mismatch is not None:
            if mismatch.field == "amount_yuan":
                values["stated"] = f"{_fmt(mismatch.stated / 10_000)}万元"
            else:
                values["stated"] = _fmt(mismatch.stated)
        templates = [spec.prompts.get(key)] if spec else []
        templates.append(self.script.fallback_prompts.get(key if spec else "unknown"))
        for template in templates:
            if template:
                try:
                    text = template.format_map(_Strict(values))
                except KeyError:
                    continue  # needs a loan-file value this call does not have
                return text
        return None


_NUMERAL = set("0123456789零〇一二两三四五六七八九十百千万亿")
#: A space between two Chinese words: where a recogniser (or a typist without punctuation) paused.
_PAUSE = re.compile(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])")


def clause_breaks(text: str) -> str:
    """Spaces between Chinese words as the clause breaks they are: a recogniser writes pauses, not commas
    (月底 三十号; 同意是同意 就是…), and every clause-level rule reads commas."""
    return _PAUSE.sub("，", text)


def _inside_numeral(text: str, start: int, length: int) -> bool:
    end = start + length
    return (text[start] in _NUMERAL and start > 0 and text[start - 1] in _NUMERAL) or (
        text[end - 1] in _NUMERAL and end < len(text) and text[end] in _NUMERAL)


def _in_a_not_a(text: str, start: int, length: int) -> bool:
    """Whether text[start:start+length] reaches into an A-not-A (行不行, 能不能) without holding all of it."""
    return any(start < m.end() and m.start() < start + length and not (start <= m.start() and m.end() <= start + length)
               for m in A_NOT_A.finditer(text))


def _third_person(text: str, index: int) -> bool:
    return bool(re.search(r"[他她]们?[也都还]?$", text[max(0, index - 3) : index]))


def _find_all(text: str, word: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(word), text)]


@lru_cache(maxsize=8192)
def _word_key(word: str) -> tuple[str, ...]:
    """A lexicon word's syllables, read once (the lexicons are fixed; answers are not, so they are not cached)."""
    return pinyin_key(word)


def _shares_syllables(word: str, syllables: frozenset[str]) -> bool:
    """Whether all but at most one syllable of `word` (as its own characters read) occur in `syllables`."""
    key = _word_key(word)
    return sum(k not in syllables for k in key) <= (1 if len(key) >= 4 else 0)


def _clause_of(text: str, part: str) -> str:
    """The clause of `text` (between punctuation) that holds `part`; `text` when it is not found."""
    at = text.find(part)
    if at < 0:
        return text
    start = max((text.rfind(p, 0, at) for p in "，。！？；,.!?;…"), default=-1) + 1
    ends = [i for p in "，。！？；,.!?;…" if (i := text.find(p, at + len(part))) >= 0]
    return text[start : min(ends) if ends else len(text)]


def _is_silence_marker(answer: str) -> bool:
    """A transcript that writes down silence (……, （沉默）, [无回答]) rather than words."""
    inner = re.sub(r"[（(【\[].{0,6}?[)）】\]]", lambda m: "" if re.search(
        r"沉默|无声|无回答|不说话|没有回答|停顿|无应答|silence", m.group(0)) else m.group(0), answer)
    return not re.sub(r"[\s.。…，,！!？?、~～-]+", "", inner)


def _fuse(rules: RuleVerdict, probs: dict[Label, float], weight: float, answered: bool) -> tuple[Label, float]:
    """Combine the rules' verdict with the learned probabilities. Without evidence that the answer gives what
    was asked, `clear` is not a possible outcome: the learned part only picks the kind of non-answer."""
    labels: tuple[Label, ...] = LABELS if answered else _VAGUE
    rule_weight = 1 - weight
    if not answered and rules.confidence < 0.5:
        rule_weight = 0.0  # no cue either: the kind is the learned part's to decide
    mass = sum(probs[k] for k in labels) or 1.0
    fused = {k: rule_weight * (rules.confidence if k == rules.label else 0.0) + weight * probs[k] / mass
             for k in labels}
    label = max(fused, key=lambda k: fused[k])
    return label, round(fused[label] / (rule_weight + weight), 3)


class _Strict(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if value is None:
            raise KeyError(key)
        return value


def _fmt(value: float | None) -> str | None:
    if value is None:
        return None
    return f"{value:g}" if value != int(value) else str(int(value))


@dataclass
class PromptLimiter:
    """At most one agent prompt per `min_interval_s` of call time, so the agent is not flooded."""

    min_interval_s: float = 8.0
    _last_s: float | None = None

    def allow(self, now_s: float) -> bool:
        if self._last_s is not None and now_s - self._last_s < self.min_interval_s:
            return False
        self._last_s = now_s
        return True


def assess_records(records: Iterable[dict[str, Any]], assessor: Assessor | None = None) -> Iterable[dict[str, Any]]:
    """The JSON-lines interface: each record comes back with the verdict's fields added."""
    assessor = assessor or Assessor()
    for record in records:
        result = assessor.assess(
            str(record.get("question", "")), str(record.get("answer", "")),
            LoanRecord.from_mapping(record.get("loan_file")), record.get("silence_s"), record.get("topic"),
        )
        yield {**record, **result.to_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlu.assess", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help="JSON lines (default: standard input)")
    parser.add_argument("--classifier", default="default",
                        help="learned part: 'default' (packaged), a model directory or id, or 'none' (rules only)")
    parser.add_argument("--encoder", default="default",
                        help="sentence encoder under the learned head: 'default' (packaged) or an ONNX path")
    args = parser.parse_args(argv)
    from nlu.classifier import ClassifierUnavailableError, load_classifier

    try:
        assessor = Assessor(classifier=load_classifier(args.classifier, encoder=args.encoder))
    except ClassifierUnavailableError as e:
        print(e, file=sys.stderr)
        return 2
    stream = open(args.file, encoding="utf-8") if args.file else sys.stdin  # noqa: SIM115
    try:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                print(f"line {number}: not a JSON object ({e})", file=sys.stderr)
                return 2
            for out in assess_records([record], assessor):
                print(json.dumps(out, ensure_ascii=False), flush=True)
    finally:
        if args.file:
            stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
