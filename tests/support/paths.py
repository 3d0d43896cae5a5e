"""Where the tests find the repository, the shared data and where they leave screenshots."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The shared test data beside the repository (../shared/data), or HUIFANG_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("HUIFANG_SHARED_DATA", REPO.parent / "shared" / "data"))
#: Where browser tests save their screenshots.
ARTIFACTS = Path(os.environ.get("HUIFANG_ARTIFACTS", REPO / "artifacts"))
