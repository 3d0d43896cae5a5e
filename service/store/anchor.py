"""Checkpoints of the audit chain outside the database, signed with Ed25519.

A hash chain alone proves nothing to someone who can write the database: they can delete the last entries or
edit one and re-hash everything after it. So the chain's head (sequence number and hash) is appended, with the
time, to a checkpoint file outside the database (`$HUIFANG_DATA_DIR/audit/checkpoints` by default; a WORM or
append-only mount shared by replicas in production), each line signed with an Ed25519 key that is also kept
outside the database. A checkpoint is written after every access or deletion entry and at least every
`interval_s` while the chain grows. `huifang audit verify` needs only the public key: it fails when the database
chain is shorter than a checkpoint or holds a different entry at a checkpointed position.

So a truncation or rewrite goes unnoticed only for entries appended after the last checkpoint: at most
`interval_s` (60 s) of verdicts and reports; an access or a deletion is checkpointed as it is logged. The first
checkpoint signs the head of whatever chain exists (sealing entries written before checkpoints were kept).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service.privacy import private_file

#: Entry kinds checkpointed at once: reads of call and customer data, changes to them and deletions are what
#: someone would want to hide (the loan book's and coaching's as much as the calls').
ACCESS_KINDS = frozenset({"report_read", "audio_read", "raw_read", "call_deleted", "customer_erased",
                          "customer_read", "customer_carried_over", "contact_set", "followup_assigned",
                          "followup_outcome", "agent_read", "message_requeued", "upload_refused", "call_replaced",
                          "version_read"})


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain's head at a moment: entry `seq` has hash `head`."""

    seq: int
    head: str
    at: str

    def message(self) -> bytes:
        return f"huifang-audit-checkpoint\n{self.seq}\n{self.head}\n{self.at}".encode()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at `path` (PEM, PKCS#8); made on first use (0600), its public key written beside it as
    `PATH.pub` for verifiers."""
    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption())

    key = serialization.load_pem_private_key(private_file(path, make), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    public = public_key_path(path)
    if not public.exists():
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def public_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


class Anchor:
    """Appends signed checkpoints of the chain's head to a file (one JSON object per line)."""

    def __init__(self, path: Path, key: Ed25519PrivateKey) -> None:
        self.path = path
        self._key = key
        self._last: tuple[int, str] | None = None

    def write(self, seq: int, head: str) -> Checkpoint | None:
        """Record that entry `seq` has hash `head`, unless that is already the last checkpoint written here."""
        if self._last == (seq, head):
            return None
        point = Checkpoint(seq, head, datetime.now(UTC).isoformat(timespec="seconds"))
        line = json.dumps({"seq": seq, "head": head, "at": point.at,
                           "sig": base64.b64encode(self._key.sign(point.message())).decode()}) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of a short line with O_APPEND: lines of several processes never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._last = (seq, head)
        return point


def read_checkpoints(path: Path, public_key: Ed25519PublicKey) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints of `path` whose signature holds, and a problem for every line that does not."""
    points: list[Checkpoint] = []
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            point = Checkpoint(int(data["seq"]), str(data["head"]), str(data["at"]))
            public_key.verify(base64.b64decode(data["sig"]), point.message())
        except (ValueError, KeyError, TypeError, InvalidSignature):
            problems.append(f"checkpoint line {number}: unreadable or not signed by the audit key")
            continue
        points.append(point)
    return points, problems
