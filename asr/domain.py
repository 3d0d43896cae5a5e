"""Loading the speech domain file (`configs/asr.yaml`): decoding prompt, domain lexicon, hallucinations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from asr.errors import AsrError
from huifang_configs import configs_file

#: The file shipped with the project; callers may pass their own.
DEFAULT_DOMAIN_FILE = configs_file("asr.yaml")


@dataclass(frozen=True, slots=True)
class AsrDomain:
    """Domain knowledge the recogniser is given; see `configs/asr.yaml` for what each field does."""

    initial_prompt: str | None
    hallucination_phrases: tuple[str, ...]
    lexicon: tuple[str, ...]


def load_domain(path: str | Path | None = None) -> AsrDomain:
    """Read and validate a domain file; raise `AsrError` naming the file and the problem."""
    path = Path(path) if path is not None else DEFAULT_DOMAIN_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise AsrError(f"cannot read speech domain file {path}: {e}") from e
    if not isinstance(raw, dict):
        raise AsrError(f"speech domain file {path} must be a mapping")

    def strings(key: str) -> tuple[str, ...]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AsrError(f"{path}: `{key}` must be a list of strings")
        return tuple(v.strip() for v in value if v.strip())

    prompt = raw.get("initial_prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise AsrError(f"{path}: `initial_prompt` must be a string")
    return AsrDomain(
        initial_prompt=" ".join(prompt.split()) if prompt else None,
        hallucination_phrases=strings("hallucination_phrases"),
        lexicon=strings("lexicon"),
    )
