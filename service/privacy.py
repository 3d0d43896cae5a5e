"""Keeping the unredacted transcript, when a bank chooses to: encrypted at rest, readable by admins only.

The key (Fernet: AES-128-CBC + HMAC-SHA256) lives in a file outside the database (`HUIFANG_PRIVACY__KEY_FILE`,
created with mode 0600 on first use); a copy of the database alone reveals nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class RawTextCipher:
    """Encrypts and decrypts the raw utterances of a call."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        self._fernet = Fernet(key_file.read_bytes().strip())

    def encrypt(self, utterances: list[dict[str, Any]]) -> bytes:
        return self._fernet.encrypt(json.dumps(utterances, ensure_ascii=False).encode("utf-8"))

    def decrypt(self, blob: bytes) -> list[dict[str, Any]]:
        try:
            data = json.loads(self._fernet.decrypt(blob))
        except InvalidToken as e:
            raise ValueError("the raw transcript cannot be decrypted with the configured key") from e
        return list(data)
