"""A throw-away Debian `redis-server` for tests (installed by .ci/run): no persistence, a free port, its own
directory; skips without the binary, fails where one is required (HUIFANG_REQUIRE_REDIS=1)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.server import free_port

REDIS = shutil.which("redis-server")


class RedisServer:
    """One redis-server process; `stop()` and `start()` again on the same port simulate an outage."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        if REDIS is None:
            if os.environ.get("HUIFANG_REQUIRE_REDIS") == "1":
                pytest.fail("redis-server is required here (HUIFANG_REQUIRE_REDIS) but not installed")
            pytest.skip("redis-server not installed (Debian's redis-server; .ci/run installs it)")
        self.folder = folder
        self.port = free_port()
        self.password = password
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [str(REDIS), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder)]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None
