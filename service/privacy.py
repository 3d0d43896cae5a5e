"""Keeping the unredacted transcript, when a bank chooses to, and customers' contact details: encrypted at rest;
files private to the service. (Free text such as outcome notes is redacted by `nlu.free_text`.)

The key (Fernet: AES-128-CBC + HMAC-SHA256) lives in a file outside the database (`HUIFANG_PRIVACY__KEY_FILE`,
created with mode 0600 on first use); a copy of the database alone reveals nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

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
