"""A normal (not editable) install works from any directory: the wheel carries every sub-package, the domain
data (`configs/` as `huifang_configs`), static pages, demo calls, migrations and the answer model, and nothing
looks for files by walking up from the source tree.

The wheel is built from this checkout and installed with --no-deps into a folder of its own; its dependencies
come from the test environment. Every command runs from an unrelated directory with only that folder (not the
checkout) on the import path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from service.auth import write_tokens_file

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding huifang installed from a freshly built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    build = root / "src"
    # Build from a copy without the virtual environment and caches (faster; the wheel is the same).
    shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "dist",
                                                               "__pycache__", ".*_cache", "artifacts", "data"))
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(dist), str(build)], check=True, timeout=600)
    (wheel,) = dist.glob("huifang-*.whl")
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, timeout=600)
    return site


def _env(site: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIFANG_")}
    return {**env, "PYTHONPATH": str(site), "HUIFANG_DATA_DIR": str(data_dir)}


def _huifang(site: Path, cwd: Path, data_dir: Path, *args: str, timeout: float = 300) -> str:
    code = "import sys; from service.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(site, data_dir),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_installed_package_finds_its_data_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    check = (
        "import nlu, service, asr, huifang_configs, huifang_cache\n"
        "from nlu.script import load_script, load_cues, DEFAULT_SCRIPT_FILE\n"
        "from nlu.report import load_risk\n"
        "from asr.domain import load_domain\n"
        "from nlu.classifier import DEFAULT_MODEL_DIR\n"
        "from service.store.store import MIGRATIONS\n"
        "from service.api.pages import STATIC_DIR\n"
        "load_script(); load_cues(); load_risk(); load_domain()\n"
        "paths = [nlu.__file__, huifang_cache.__file__, DEFAULT_SCRIPT_FILE, DEFAULT_MODEL_DIR, MIGRATIONS,\n"
        "         STATIC_DIR]\n"
        "assert all(str(p).startswith(sys.argv[1]) for p in paths), paths\n"
        "assert (MIGRATIONS / 'env.py').is_file() and (STATIC_DIR / 'console.html').is_file()\n"
        "assert (DEFAULT_MODEL_DIR / 'head.npz').is_file()\n"
    )
    done = subprocess.run([sys.executable, "-c", "import sys\n" + check, str(installed)], cwd=tmp_path,
                          env=_env(installed, tmp_path / "data"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_transcribe_score_serve_and_replay_from_another_directory(installed: Path, tmp_path: Path,
                                                                   shared_data: Path) -> None:
    data_dir, cwd = tmp_path / "data", tmp_path / "elsewhere"
    cwd.mkdir()
    call = shared_data / "calls" / "call_s03.flac"
    loan = json.loads((shared_data / "calls" / "call_s03.json").read_text(encoding="utf-8"))["loan_file"]
    (cwd / "loan.json").write_text(json.dumps(loan), encoding="utf-8")

    transcript = _huifang(installed, cwd, data_dir, "transcribe", str(call))
    assert "customer:" in transcript and "agent:" in transcript

    report = json.loads(_huifang(installed, cwd, data_dir, "score", str(call), "--loan-file", "loan.json",
                                 "--json", "--no-progress"))
    assert report["risk_score"] > 0 and report["assessor_version"]

    tokens = tmp_path / "tokens.yaml"
    write_tokens_file(tokens, {"pkg-test-token": ("admin", None)})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**_env(installed, data_dir), "HUIFANG_AUTH__TOKENS_FILE": str(tokens)}
    server = subprocess.Popen([sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())",
                               "serve", "--port", str(port)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read()[-2000:] if server.stderr else "server exited"
            assert time.monotonic() < deadline, "the installed server did not become healthy"
            time.sleep(1)
        events = _huifang(installed, cwd, data_dir, "replay", str(call), "--call-id", "pkg", "--url",
                          f"ws://127.0.0.1:{port}", "--token", "pkg-test-token", "--json")
        types = {json.loads(line)["type"] for line in events.splitlines() if line.startswith("{")}
        assert "final" in types
    finally:
        server.terminate()
        server.wait(timeout=30)
