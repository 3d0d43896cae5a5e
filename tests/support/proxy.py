"""Debian's nginx running the shipped deploy/nginx.conf for tests (installed by .ci/run): only the listen port,
the replicas, paths and (optionally) timeouts are replaced. Skips without nginx, fails where it is required
(HUIFANG_REQUIRE_NGINX=1)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.paths import REPO

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def require_nginx() -> str:
    if NGINX is None:
        if os.environ.get("HUIFANG_REQUIRE_NGINX"):
            pytest.fail("nginx is required here (HUIFANG_REQUIRE_NGINX) but not installed")
        pytest.skip("nginx not installed (Debian's nginx-light; .ci/run installs it)")
    return NGINX


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@contextmanager
def front_proxy(folder: Path, port: int, replicas: list[int],
                overrides: list[tuple[str, str]] | None = None) -> Iterator[None]:
    """nginx with deploy/nginx.conf on `port` in front of the huifang replicas on `replicas` (ports)."""
    nginx = require_nginx()
    conf = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    servers = "\n        ".join(f"server 127.0.0.1:{p};" for p in replicas)
    for pattern, value in [(r"listen 8080;", f"listen 127.0.0.1:{port};"),
                           (r"server 127\.0\.0\.1:8000;", servers),
                           (r"pid [^;]+;", f"pid {folder / 'nginx.pid'};"),
                           (r"error_log [^;]+;", f"error_log {folder / 'error.log'} warn;"),
                           (r"access_log (\S+) huifang;", f"access_log {folder / 'access.log'} huifang;"),
                           (r"worker_connections \d+;", "worker_connections 1024;"),
                           (r"worker_processes auto;", "worker_processes 1;"),
                           *(overrides or [])]:
        conf, count = re.subn(pattern, value, conf)
        assert count == 1, pattern
    (folder / "nginx.conf").write_text(conf, encoding="utf-8")
    (folder / "logs").mkdir(exist_ok=True)
    proxy = subprocess.Popen([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        yield
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
