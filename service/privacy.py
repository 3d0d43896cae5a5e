"""Keeping the unredacted transcript, when a bank chooses to, and customers' contact details: encrypted at rest;
files private to the service; free text (outcome notes) redacted like transcripts.

The key (Fernet: AES-128-CBC + HMAC-SHA256) lives in a file outside the database (`HUIFANG_PRIVACY__KEY_FILE`,
created with mode 0600 on first use); a copy of the database alone reveals nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet, InvalidToken

from huifang_configs import configs_file
from nlu.pii import Redactor, Span, apply_masks

log = logging.getLogger(__name__)


def private_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The contents of the secret kept at `path` (a key), made by `make()` on first use with mode 0600. The file
    appears complete or not at all, and of processes making it at once the first wins, so replicas starting
    together on a shared volume end up with one secret."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(make())
            os.link(tmp, path)  # fails if another process made it first: theirs stands
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def make_private(data_dir: Path, db_url: str | None = None) -> None:
    """Files this process writes from now on are 0600 and its folders 0700 (umask 077), and what exists of the
    data directory, the SQLite database and its WAL is made so: the audio, transcripts and loan files under it
    are no other local user's to read."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = [data_dir]
    if db_url and db_url.startswith("sqlite:///"):
        db = Path(db_url.removeprefix("sqlite:///"))
        paths += [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()]
    for path in paths:
        try:
            path.chmod(0o700 if path.is_dir() else 0o600)
        except OSError as e:  # a mount this user does not own: its owner decides
            log.warning("cannot make %s private: %s", path, e)


class RawTextCipher:
    """Encrypts and decrypts the raw utterances of a call."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        try:
            self._fernet = Fernet(private_file(key_file, Fernet.generate_key).strip())
        except ValueError as e:
            raise ValueError(f"{key_file} is not a Fernet key (32 url-safe base64-encoded bytes, as "
                             "Fernet.generate_key() makes): {e}") from e

    def encrypt(self, utterances: list[dict[str, Any]]) -> bytes:
        return self.seal(utterances)

    def decrypt(self, blob: bytes) -> list[dict[str, Any]]:
        return list(self.unseal(blob, "the raw transcript"))

    def seal(self, value: Any) -> bytes:
        """Any JSON value, encrypted (customers' contact details use the same key as raw transcripts)."""
        return self._fernet.encrypt(json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def unseal(self, blob: bytes, what: str = "the stored value") -> Any:
        """The JSON value `seal` encrypted; ValueError naming `what` when the key is not the one it was sealed
        with."""
        try:
            return json.loads(self._fernet.decrypt(blob))
        except InvalidToken as e:
            raise ValueError(f"{what} cannot be decrypted with the configured key") from e


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
