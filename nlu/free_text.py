"""Personal data in free text that has no loan file beside it (a follow-up's outcome note, written by an agent):
numbers masked as in transcripts (`nlu.pii`), names, e-mail and street addresses by the patterns of
`configs/free_text_redaction.yaml`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from huifang_configs import configs_file
from nlu.pii import Redactor, Span, apply_masks


@dataclass(frozen=True, slots=True)
class FreeTextRedactor:
    """Masks personal data in free text that has no loan file beside it (a follow-up's outcome note): numbers as
    in transcripts (nlu/pii.py), and names, e-mail addresses and street addresses by the patterns of
    configs/free_text_redaction.yaml, with the masks transcripts use ([姓名], [地址]; e-mail [邮箱])."""

    names: re.Pattern[str]
    titled_names: re.Pattern[str]
    latin_names: re.Pattern[str]
    addresses: re.Pattern[str]
    latin_addresses: re.Pattern[str]

    @classmethod
    def from_file(cls, path: Path | None = None) -> FreeTextRedactor:
        data = yaml.safe_load((path or configs_file("free_text_redaction.yaml")).read_text(encoding="utf-8"))
        surnames = "[" + re.escape("".join(str(data["surnames"]).split())) + "]"

        def words(key: str) -> str:
            return "|".join(re.escape(str(w)) for w in sorted(data[key], key=len, reverse=True))

        han, digits = r"\u4e00-\u9fff", r"0-9０-９一二三四五六七八九十百零〇"
        return cls(
            names=re.compile(rf"(?:{words('introducers')})[:：\s]*({surnames}[{han}]{{1,2}})"),
            titled_names=re.compile(rf"{surnames}[{han}]{{0,2}}?(?:{words('titles')})"),
            latin_names=re.compile(rf"\b(?:{words('latin_titles')})\.?\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?"),
            addresses=re.compile(rf"(?:[{han}]{{1,8}}?(?:{words('address_regions')}))*[{han}{digits}]{{1,12}}?"
                                 rf"(?:{words('address_places')})[{digits}A-Za-z-]+(?:{words('address_units')})"
                                 rf"(?:[{digits}A-Za-z-]+(?:{words('address_units')}))*"),
            latin_addresses=re.compile(rf"\b\d{{1,5}}\s+(?:[A-Z][a-z]+\s+){{1,4}}(?:{words('latin_streets')})\b\.?"),
        )

    def redact(self, text: str) -> str:
        """`text` with personal numbers, names, e-mail and street addresses masked."""
        text = _EMAIL.sub("[邮箱]", text)  # before numbers: digits inside an address are its own
        text = Redactor().redact(text)[0]  # a redactor of its own: it keeps state between texts
        spans = [Span(m.start(1), m.end(1), "name") for m in self.names.finditer(text)]
        spans += [Span(m.start(), m.end(), "name") for p in (self.titled_names, self.latin_names)
                  for m in p.finditer(text)]
        spans += [Span(m.start(), m.end(), "address") for p in (self.addresses, self.latin_addresses)
                  for m in p.finditer(text)]
        return apply_masks(text, spans)


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


@lru_cache(maxsize=1)
def free_text_redactor() -> FreeTextRedactor:
    """The packaged configs/free_text_redaction.yaml, read once."""
    return FreeTextRedactor.from_file()
