"""Every shell example of README.md works as written (issue #27): each ```bash block is read from the README itself
and run with bash against a running `huifang serve` (real model, a data directory seeded as `make run` seeds
one), with only the server's address and token put in. A block fails on a command's failure, on any HTTP answer
that is not 2xx, on a traceback, and when a `# → TEXT` line under a command (the README's sample output) is not
in what the block printed.

Not run, because this test stands in for them: `make run` and `huifang serve` (the fixture starts the same
`huifang demo-seed --if-empty` and `huifang serve`), and `make test` (the suite this test is part of).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.server import free_port, wait_healthy

README = REPO / "README.md"
#: Lines the test does not run, and why (each must still be in the README: see test_the_skipped_lines_exist).
SKIPPED = {"make run": "the fixture runs its demo-seed and serve", "make test": "this test is part of it",
           ".venv/bin/huifang serve": "the fixture's server"}
#: What the README calls the server, and the token placeholder of its `export` lines.
README_ADDRESS = "localhost:8000"
TOKEN_LINE = re.compile(r"^export HUIFANG_TOKEN=\.\.\.(\s.*)?$", re.M)
EXPECTED = "# → "
#: Every curl of a block reports its HTTP status on stderr (the body stays on stdout, as the README shows it).
CURL = """curl() { command curl --write-out '%{stderr}HTTP %{http_code}\\n' "$@"; }\n"""


@dataclass(frozen=True, slots=True)
class Block:
    """One ```bash block of the README: where it starts, its text, and the sample output lines under commands."""

    line: int
    text: str
    expected: tuple[str, ...]

    def script(self, port: int, token: str) -> str:
        """The block as it runs here: skipped lines dropped, the test server's address and token put in."""
        lines = []
        for raw in self.text.splitlines():
            if any(raw.startswith(s) for s in SKIPPED):
                continue
            line = raw.replace(README_ADDRESS, f"127.0.0.1:{port}")
            if line.startswith(".venv/bin/huifang replay"):
                line = line.replace(" --realtime", f" --realtime --url ws://127.0.0.1:{port}", 1)
                if "--url" not in line:
                    line += f" --url ws://127.0.0.1:{port}"
            lines.append(line)
        return TOKEN_LINE.sub(f"export HUIFANG_TOKEN={token}", "\n".join(lines))


def readme_blocks(text: str) -> list[Block]:
    blocks, current, start = [], None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if current is None and line.strip() == "```bash":
            current, start = [], number
        elif current is not None and line.strip() == "```":
            body = "\n".join(current)
            expected = tuple(m.group(1).strip() for m in re.finditer(rf"^{EXPECTED}(.+)$", body, re.M))
            blocks.append(Block(start, body, expected))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_examples_and_the_skipped_lines_exist() -> None:
    assert len(BLOCKS) >= 5
    for prefix in SKIPPED:
        assert any(line.startswith(prefix) for b in BLOCKS for line in b.text.splitlines()), prefix
    # Every block that talks to the server shows how to get the token into it.
    for block in BLOCKS:
        needs_token = "Authorization" in block.text or "huifang replay" in block.text
        assert not needs_token or TOKEN_LINE.search(block.text), f"README.md:{block.line} uses a token it never sets"
        assert "curl" not in block.text or all('-H "Authorization: Bearer $HUIFANG_TOKEN"' in c
                                               for c in _commands(block.text) if c.startswith("curl")), block.line


def _commands(text: str) -> list[str]:
    """The block's commands, continuation lines joined."""
    return [c.strip() for c in re.sub(r"\\\n\s*", " ", text).splitlines() if c.strip() and not c.startswith("#")]


@dataclass(frozen=True, slots=True)
class Server:
    port: int
    token: str
    env: dict[str, str]
    output: Path


@pytest.fixture(scope="module")
def server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Server]:
    """`make run` without make: demo-seed into a fresh data directory, then `huifang serve` with no tokens file, so
    that it makes and prints a development token, as on a first run."""
    data = tmp_path_factory.mktemp("readme-data")
    (data / "models").symlink_to(model_cache)
    env = {k: v for k, v in os.environ.items() if k != "HUIFANG_TOKEN"}
    env |= {"HUIFANG_DATA_DIR": str(data), "HUIFANG_METRICS__PORT": "0"}
    huifang = [sys.executable, "-m", "service.cli"]
    seeded = subprocess.run([*huifang, "demo-seed", "--if-empty"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    port = free_port()
    output = data / "serve.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen([*huifang, "serve", "--port", str(port)], env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            wait_healthy(proc, port, 300)
            token = _printed_token(output)
            yield Server(port, token, env, output)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _printed_token(output: Path) -> str:
    """The token from the box `huifang serve` prints once it listens (it may take a moment after /healthz)."""
    import time

    for _ in range(50):
        found = re.search(r"export HUIFANG_TOKEN=(\S+)", output.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"huifang serve printed no token:\n{output.read_text(errors='replace')[-3000:]}")


@pytest.mark.model
def test_serve_prints_the_token_urls_and_next_command_last_in_a_box(server: Server) -> None:
    lines = [line for line in server.output.read_text(encoding="utf-8").splitlines() if line.strip()]
    top = next(i for i, line in enumerate(lines) if line.startswith("┌"))
    bottom = next(i for i, line in enumerate(lines) if line.startswith("└"))
    # Last at start-up: after uvicorn's own lines; only the requests made since (access log lines) follow it.
    assert any("Uvicorn running on" in line for line in lines[:top]), lines[:top]
    after = [line for line in lines[bottom + 1 :] if not re.search(r'"(GET|POST|PUT|DELETE) \S+ HTTP', line)]
    assert after == [], "printed after the box at start-up:\n" + "\n".join(after)
    text = "\n".join(lines[top : bottom + 1])
    for wanted in (f"export HUIFANG_TOKEN={server.token}", f"/console?demo=1#token={server.token}",
                   'curl -s -H "Authorization: Bearer $HUIFANG_TOKEN"', "huifang replay"):
        assert wanted in text, wanted
    assert "Traceback" not in server.output.read_text(encoding="utf-8")


@pytest.mark.model
@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_example(block: Block, server: Server) -> None:
    script = block.script(server.port, server.token)
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + CURL + script], env=server.env, cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    where = f"README.md:{block.line}\n--- script\n{script}\n--- stdout\n{run.stdout[-4000:]}\n--- stderr\n" \
            f"{run.stderr[-4000:]}"
    assert run.returncode == 0, where
    statuses = re.findall(r"^HTTP (\d{3})$", run.stderr, re.M)
    assert all(s.startswith("2") for s in statuses), f"non-2xx answers {statuses}: {where}"
    assert statuses or "curl" not in block.text, f"no curl reported its status: {where}"
    assert "Traceback" not in run.stdout + run.stderr, where
    for text in block.expected:
        assert text in run.stdout, f"README sample output {text!r} not printed: {where}"


@pytest.mark.model
def test_replay_without_or_with_a_wrong_token_is_one_line_and_exit_2(server: Server, shared_data: Path) -> None:
    clip = str(shared_data / "calls" / "call_s01.8k.wav")
    for token, says in ((None, "export HUIFANG_TOKEN="), ("not-a-token", "does not know this token")):
        env = {**server.env, **({"HUIFANG_TOKEN": token} if token else {})}
        run = subprocess.run([sys.executable, "-m", "service.cli", "replay", clip, "--call-id", "refused-01",
                              "--url", f"ws://127.0.0.1:{server.port}"], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2, (token, run.stdout, run.stderr)
        assert run.stdout == "" and run.stderr.count("\n") == 1 and run.stderr.startswith("huifang: error: "), \
            (token, run.stdout, run.stderr)
        assert says in run.stderr and "Traceback" not in run.stderr, run.stderr


@pytest.mark.model
def test_transcribe_and_score_give_the_same_text(server: Server, shared_data: Path) -> None:
    import json

    call = str(shared_data / "calls" / "call_s01.flac")
    huifang = [sys.executable, "-m", "service.cli"]
    transcribed = subprocess.run([*huifang, "transcribe", call, "--json"], env=server.env, cwd=REPO,
                                 capture_output=True, text=True, timeout=600)
    scored = subprocess.run([*huifang, "score", call, "--json"], env=server.env, cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert transcribed.returncode == 0 and scored.returncode == 0, transcribed.stderr + scored.stderr
    said = [(u["channel"], u["text"]) for u in map(json.loads, transcribed.stdout.splitlines())]
    report = json.loads(scored.stdout)
    assert said and said == [(u["channel"], u["text"]) for u in report["utterances"] if u["text"]]
