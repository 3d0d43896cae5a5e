"""The learned half of answer assessment: a transformers sequence classifier over (question, answer).

The default weights in `nlu/model/` are a compact BERT trained from scratch by `python -m nlu.train` on the
project's own corpus (`python -m nlu.corpus`), so they are free of third-party licences. Any Hugging Face model
id or local path with a sequence-classification head over the four labels works by configuration.

A model whose config has `huifang_rule_tags: true` (the default one) reads the rules' findings as a few tag
words before the answer (`nlu.assess.RuleView.tags`); any other model reads the plain (question, answer) pair.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlu.types import LABELS, Label

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"


class ClassifierUnavailableError(ValueError):
    """The configured answer classifier cannot be loaded or does not predict huifang's four labels."""


def load_classifier(name: str, threads: int = 1) -> AnswerClassifier | None:
    """The classifier a setting names: "default" (the packaged model), "none" (rules only), a path or an id."""
    if name.strip().lower() in ("", "none", "off"):
        return None
    return AnswerClassifier.load(DEFAULT_MODEL_DIR if name == "default" else name, threads)


@dataclass
class AnswerClassifier:
    """Label probabilities for (question, answer) pairs. Load once; safe to call from several threads."""

    model: Any
    tokenizer: Any
    max_length: int = 96
    #: The model was trained with the rules' tag words before the answer (see module docstring).
    rule_tags: bool = False
    #: A fast tokenizer's truncation state is not thread-safe ("Already borrowed"); a forward pass takes ~ms.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL_DIR, threads: int = 1) -> AnswerClassifier:
        """Load a model directory or Hugging Face model id (from the local cache: nothing is downloaded).

        Raises `ClassifierUnavailableError` naming the model when it cannot be loaded."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ClassifierUnavailableError(
                f"answer classifier {path!s} cannot be loaded ({e}); give a model directory, a Hugging Face id "
                "that is in the local cache, or 'none' for rules only") from e
        model.eval()
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if labels != list(LABELS):
            raise ClassifierUnavailableError(f"{path}: the model's labels are {labels}, expected {list(LABELS)}")
        return cls(model, tokenizer, rule_tags=bool(getattr(model.config, "huifang_rule_tags", False)))

    def probabilities(self, question: str, answer: str, tags: str = "") -> dict[Label, float]:
        """P(label | question, answer); `tags` are the rules' findings (`RuleView.tags`), read if the model was
        trained with them."""
        import torch

        if self.rule_tags:
            answer = f"{tags} {answer}"
        with self._lock, torch.inference_mode():
            batch = self.tokenizer(question, answer, truncation=True, max_length=self.max_length,
                                   return_tensors="pt")
            logits = self.model(**batch).logits[0]
        probs = torch.softmax(logits, dim=-1).tolist()
        return {label: float(p) for label, p in zip(LABELS, probs, strict=True)}
