"""Loading the learned half of answer assessment, as the setting `nlu.classifier` names it.

- "default": the packaged model in `nlu/model/`: the multilingual sentence encoder with a small head trained on
  the project's own corpus (`nlu/learned.py`);
- a directory holding `head.json` (a head trained by `python -m tools.train`): that head on its encoder;
- any other directory or cached Hugging Face id: a transformers sequence classifier over (question, answer)
  with huifang's four labels (`AnswerClassifier`), for a bank that fine-tunes its own;
- "none" (or "off", ""): rules only.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlu.types import LABELS, Label

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"


class ClassifierUnavailableError(ValueError):
    """The configured answer classifier cannot be loaded or does not predict huifang's four labels."""


def load_classifier(name: str, threads: int = 1, encoder: str = "default",
                    cache_dir: str | Path | None = None) -> Any:
    """The learned model a setting names (see the module docstring), or None for rules only. `encoder` and
    `cache_dir` say which sentence encoder a head runs on and where its weights are provisioned.

    Raises `ClassifierUnavailableError` naming the model and what to do when it cannot be loaded."""
    if name.strip().lower() in ("", "none", "off"):
        return None
    from nlu.encoder import EncoderUnavailableError
    from nlu.learned import META_FILE, EncoderClassifier, LearnedUnavailableError

    path = DEFAULT_MODEL_DIR if name == "default" else Path(name).expanduser()
    if (path / META_FILE).is_file():
        try:
            return EncoderClassifier.load(path, encoder_name=encoder, cache_dir=cache_dir, threads=threads)
        except (EncoderUnavailableError, LearnedUnavailableError) as e:
            raise ClassifierUnavailableError(f"answer model {path}: {e}") from e
    return AnswerClassifier.load(name, threads)


@dataclass
class AnswerClassifier:
    """Label probabilities for (question, answer) pairs. Load once; safe to call from several threads."""

    model: Any
    tokenizer: Any
    max_length: int = 96
    version: str = "transformers"
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
        if getattr(model.config, "huifang_rule_tags", False):
            raise ClassifierUnavailableError(
                f"{path} was trained to read the rules' findings before the answer (huifang 0.1); the learned part "
                "now reads the question and answer alone: retrain it, or use 'default'")
        name = getattr(model.config, "_name_or_path", "") or str(path)
        return cls(model, tokenizer, version="hf-" + hashlib.sha256(name.encode()).hexdigest()[:8])

    def explain(self, question: str, answer: str, label: Label) -> list[str]:
        """A transformers classifier keeps no examples to show."""
        return []

    def probabilities(self, question: str, answer: str) -> dict[Label, float]:
        """P(label | question, answer)."""
        import torch

        with self._lock, torch.inference_mode():
            batch = self.tokenizer(question, answer, truncation=True, max_length=self.max_length,
                                   return_tensors="pt")
            logits = self.model(**batch).logits[0]
        probs = torch.softmax(logits, dim=-1).tolist()
        return {label: float(p) for label, p in zip(LABELS, probs, strict=True)}
