"""The learned half of answer assessment: a transformers sequence classifier over (question, answer).

The default weights in `nlu/model/` are a compact BERT trained from scratch by `python -m nlu.train` on the
project's own corpus (`python -m nlu.corpus`), so they are free of third-party licences. Any Hugging Face model
id or local path with a sequence-classification head over the four labels works by configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlu.types import LABELS, Label

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"


@dataclass
class AnswerClassifier:
    """Label probabilities for (question, answer) pairs. Load once, call from one thread at a time per instance."""

    model: Any
    tokenizer: Any
    max_length: int = 96

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL_DIR, threads: int = 1) -> AnswerClassifier:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForSequenceClassification.from_pretrained(str(path))
        model.eval()
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if labels != list(LABELS):
            raise ValueError(f"{path}: the model's labels are {labels}, expected {list(LABELS)}")
        return cls(model, tokenizer)

    def probabilities(self, question: str, answer: str) -> dict[Label, float]:
        """P(label | question, answer)."""
        import torch

        batch = self.tokenizer(question, answer, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**batch).logits[0]
        probs = torch.softmax(logits, dim=-1).tolist()
        return {label: float(p) for label, p in zip(LABELS, probs, strict=True)}
