"""Answer assessment: was the customer's answer clear, missing (omission), hedged (unclear) or evasive?

`Assessor.assess(question, answer, ...)` is the Python API used by the live pipeline and post-call scoring;
`python -m nlu.assess [FILE]` reads JSON lines `{"question","answer"[,"loan_file","silence_s","topic"]}` and
writes each back with the verdict added. The verdict combines explicit rules (cue lexicons in
`configs/cues.yaml`, the slot each topic of `configs/call_script.yaml` expects, the loan record) into a label
with its evidence; the prompt for the agent comes from the script's templates.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nlu.questions import detect_topics
from nlu.script import CallScript, Cues, Topic, load_cues, load_script
from nlu.slots import decimal_equal, extract_slot
from nlu.types import Assessment, Evidence, Label, LoanRecord, Mismatch, Slot

_FIGURES = ("amount_yuan", "years", "day", "percent")
_COUNTER_QUESTION = re.compile(r"(什么|干嘛|干什么|为什么|怎么|谁|哪)[^，。]*[？?吗呢嘛]|[？?]$")
#: How far a stated figure may be from the record before it is a contradiction (people round money).
_TOLERANCE = {"amount_yuan": 0.02, "monthly_yuan": 0.03, "rate_pct": 0.005, "term_years": 0.0, "repay_day": 0.0}


@dataclass(frozen=True, slots=True)
class AssessOptions:
    """Thresholds of the assessment."""

    #: Silence (s) after a question that, with no answer, counts as not answering.
    silence_timeout_s: float = 5.0
    #: Weight of the learned classifier where the rules are unsure (confidence at most `classifier_below`);
    #: chosen before measuring, kept because fused beat the rules alone on held-out templates (bench/nlu_eval.py).
    classifier_weight: float = 0.5
    classifier_below: float = 0.7


@dataclass(frozen=True, slots=True)
class RuleView:
    """What the rules saw in an answer, before deciding a label."""

    #: The slot kind the question asks for (None: question not recognised).
    expected: str | None
    #: Cue words found, per label they point to.
    hits: dict[str, list[str]]
    counter: bool
    slot: Slot | None
    #: The answer ends in a softening particle (吧, 吧。): 好吧 is weaker consent than 好.
    hedged_end: bool

    def tags(self) -> str:
        """The view as a few words that the learned classifier reads before the answer text, so that it learns
        how the lexicons' findings combine with the wording instead of rediscovering the lexicons from a small
        corpus (nlu/classifier.py)."""
        words = ["ask" + re.sub("[^a-z]", "", self.expected or "none")]
        words += ["cue" + label for label, found in self.hits.items() if found]
        if self.counter:
            words.append("counterq")
        if self.slot is None:
            words.append("slotnone")
        elif self.slot.value is None:
            words.append("slotempty")
        else:
            words.append("slotapprox" if self.slot.approximate else "slotexact")
        if self.hedged_end:
            words.append("hedgeend")
        return " ".join(words)


#: Every word `RuleView.tags` can produce, for the classifier's vocabulary.
RULE_TAG_WORDS = (
    *(f"ask{k}" for k in ("amountyuan", "years", "day", "percent", "yesno", "consent", "text", "none")),
    "cueevasive", "cueomission", "cueunclear", "counterq", "slotnone", "slotempty", "slotapprox", "slotexact",
    "hedgeend",
)


@dataclass
class Assessor:
    """Holds the call script and cue lexicons; `assess` is pure given them."""

    script: CallScript = field(default_factory=load_script)
    cues: Cues = field(default_factory=load_cues)
    options: AssessOptions = field(default_factory=AssessOptions)
    #: Optional learned second opinion (nlu/classifier.py); used per `options.classifier_weight`.
    classifier: Any = None

    def assess(self, question: str, answer: str, loan: LoanRecord | None = None, silence_s: float | None = None,
               topic: str | None = None) -> Assessment:
        """Assess one answer. `topic` skips question detection; `silence_s` is how long the customer stayed
        silent after the question when `answer` is empty."""
        asked = detect_topics(question, self.script, loan.role if loan else None)
        topic_id = topic if topic in self.script.topics else (asked[0] if asked else None)
        spec = self.script.topics.get(topic_id) if topic_id else None
        answer = answer.strip()
        if not answer:
            return self._silence(spec, loan, silence_s, tuple(asked))

        view = self.rule_view(answer, spec)
        hits, counter, slot, hedged_end = view.hits, view.counter, view.slot, view.hedged_end
        evidence: list[Evidence] = []
        for cue_label, words in hits.items():
            evidence.extend(Evidence("cue", w, cue_label) for w in words)  # type: ignore[arg-type]
        if slot is not None:
            evidence.append(Evidence("slot", slot.text))

        label: Label
        decided_by_record = False  # the classifier never sees the loan record: it has no say then
        vague_words = hits["unclear"] or hits["omission"]
        if hits["evasive"] or (counter and not vague_words and (slot is None or slot.value is None)):
            if counter and not hits["evasive"]:
                evidence.append(Evidence("counter_question", answer, "evasive"))
            label, confidence = "evasive", 0.9 if hits["evasive"] else 0.75
        elif hits["omission"] and not (slot is not None and slot.kind in _FIGURES and slot.value is not None):
            # "I don't know / the agent did it": omission, unless a figure was given after all.
            label, confidence = "omission", 0.9
        elif slot is not None and slot.value is not None and slot.approximate and (
            set(hits["unclear"]) <= set(self.cues.rounding)
        ) and (
            self._mismatch(spec, slot, loan, loose=True) is False
        ):
            # 四千二左右 when the record says 4,200: the customer knows the figure, rounding aside.
            label, confidence = "clear", 0.7
            decided_by_record = True
        elif slot is not None and slot.value is not None and not slot.approximate and not hits["unclear"]:
            if hedged_end and spec is not None and spec.slot in ("yes_no", "consent"):
                label, confidence = "unclear", 0.7  # 好吧 / 能吧: consent softened into a hedge
            else:
                label, confidence = "clear", 0.9 if spec and spec.slot != "text" else 0.6
        elif slot is not None or hits["unclear"]:
            label, confidence = "unclear", 0.85 if (slot is not None and slot.approximate) else 0.75
        else:
            evidence.append(Evidence("missing_slot", spec.slot if spec else "answer", "omission"))
            label, confidence = "omission", 0.7

        if self.classifier is not None and self.options.classifier_weight > 0 and not decided_by_record and (
            confidence <= self.options.classifier_below
        ):
            probs = self.classifier.probabilities(question, answer, view.tags())
            w = self.options.classifier_weight
            fused = {k: (1 - w) * (confidence if k == label else 0.0) + w * p for k, p in probs.items()}
            label = max(fused, key=lambda k: fused[k])
            confidence = fused[label]
            evidence.append(Evidence("cue", f"classifier p={probs[label]:.2f}", label))

        mismatch = self._mismatch(spec, slot, loan) if label == "clear" else None
        if mismatch is not None:
            evidence.append(Evidence("mismatch", f"{mismatch.field}: {mismatch.stated:g} vs {mismatch.on_file:g}"))
        prompt = self._prompt(spec, label, loan, slot, mismatch)
        return Assessment(topic_id, label, confidence, tuple(evidence), (slot,) if slot else (), mismatch, prompt,
                          tuple(asked))

    def rule_view(self, answer: str, spec: Topic | None) -> RuleView:
        """What the cue lexicons and slot extraction find in a (non-empty) answer to a question of `spec`."""
        hits = {label: self._cues(answer, label) for label in ("evasive", "omission", "unclear")}
        return RuleView(
            expected=spec.slot if spec else None,
            hits=hits,
            counter=bool(_COUNTER_QUESTION.search(answer)),
            slot=extract_slot(spec.slot, answer, self.cues) if spec else self._any_fact(answer),
            hedged_end=answer.rstrip("。！!，, ").endswith(self.cues.hedge_particles),
        )

    def classifier_input(self, question: str, answer: str, loan: LoanRecord | None = None,
                         topic: str | None = None) -> tuple[str, str, str]:
        """(question, answer, rule tags) as the learned classifier reads them in `assess` (same arguments);
        for training and measuring it (nlu/train.py, bench/nlu_eval.py)."""
        asked = detect_topics(question, self.script, loan.role if loan else None)
        topic_id = topic if topic in self.script.topics else (asked[0] if asked else None)
        spec = self.script.topics.get(topic_id) if topic_id else None
        answer = answer.strip()
        return question, answer, self.rule_view(answer, spec).tags() if answer else ""

    def _silence(self, spec: Topic | None, loan: LoanRecord | None, silence_s: float | None,
                 asked: tuple[str, ...]) -> Assessment:
        waited = silence_s if silence_s is not None else self.options.silence_timeout_s
        evidence = (Evidence("silence", f"{waited:.1f} s without an answer"),)
        label: Label = "evasive" if spec is None or spec.sensitivity != "low" else "omission"
        confidence = 0.8 if waited >= self.options.silence_timeout_s else 0.5
        return Assessment(spec.id if spec else None, label, confidence, evidence, (), None,
                          self._prompt(spec, label, loan, None, None), asked)

    def _any_fact(self, answer: str) -> Slot | None:
        """With the question not understood (an ASR error in it, say), any stated fact still counts: an answer
        of "每月18号" to an unrecognised question is not an omission."""
        for kind in ("day", "percent", "years", "amount_yuan", "yes_no"):
            slot = extract_slot(kind, answer, self.cues)
            if slot is not None:
                return slot
        return None

    def _cues(self, answer: str, label: str) -> list[str]:
        words = sorted(getattr(self.cues, label), key=len, reverse=True)
        found: list[str] = []
        for w in words:
            if w in answer and not any(w in longer for longer in found):
                found.append(w)
        return found

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
                        help="learned classifier: 'default' (packaged), a model directory or id, or 'none'")
    args = parser.parse_args(argv)
    from nlu.classifier import ClassifierUnavailableError, load_classifier

    try:
        assessor = Assessor(classifier=load_classifier(args.classifier))
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
