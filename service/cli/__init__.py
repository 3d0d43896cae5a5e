"""`huifang` command line: `serve` runs the service, `transcribe` prints a recording's utterances, `replay`
streams one through the live socket (the client in `service.cli.replay`), `score` / `score-dir` score recorded
calls (`service.cli.score`), `score-archive` scores an archive through the job queue, here or on Ray
(`service.cli.archive`), `plan` (the loan book's daily planning), `demo-seed` (a synthetic loan book), `audit
verify`, `coaching rebuild`, `outbox` and `token` for operators, `rescore`, and `export-feedback` (reviewed
disputes of prompts as an evaluation set, `service.cli.feedback`).

Errors a user can fix (bad audio, limits, missing model, bad arguments) print one line and exit with code 2;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from asr.errors import AsrError
from service.errors import ServiceError
from service.ids import BadId, IdKind, check_id
from service.logs import install as install_logging

EXIT_USAGE = 2


def _format_time(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:05.2f}"


def _progress(total: float, enabled: bool, desc: str) -> tuple[Callable[[float], None], Callable[[], None]]:
    """A tqdm bar on a terminal (stderr), nothing otherwise; returns (update to absolute value, close)."""
    if not enabled:
        return (lambda _value: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=round(total, 1), unit="s", desc=desc, file=sys.stderr, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")

    def update(value: float) -> None:
        bar.update(max(0.0, min(value, total) - bar.n))

    return update, bar.close


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.audio import decode_audio
    from asr.streaming import SileroStep
    from asr.transcribe import Transcriber, default_roles
    from pipeline.call import roles_problem
    from pipeline.recording import transcribe_like_live
    from service import bootstrap
    from service.settings import get_settings

    settings = get_settings()
    roles = [r.strip() for r in args.channels.split(",")] if args.channels else None
    problem = roles_problem(roles, any_name=True) if roles is not None else None
    if problem is not None:
        raise ServiceError("usage", f"--channels {problem}")
    show_progress = sys.stderr.isatty() and not args.no_progress
    audio = decode_audio(args.file, bootstrap.decode_limits(settings))
    if roles is not None and len(roles) != audio.channel_count:
        raise ServiceError("usage", f"--channels names {len(roles)} channel(s) but the recording has "
                           f"{audio.channel_count}")
    transcriber = Transcriber(bootstrap.asr_options(settings))
    transcriber.load()
    update, close = _progress(audio.duration_s * audio.channel_count, show_progress, "transcribing")
    try:
        # Cut and decoded exactly as `huifang score`, uploads and live calls are: the text printed here is the
        # text those score (one decoding path, issue #27).
        utterances = transcribe_like_live(audio, tuple(roles) if roles else default_roles(audio.channel_count),
                                          transcriber, SileroStep(), bootstrap.segment_options(settings), update)
    finally:
        close()
    for u in utterances:
        if args.json:
            print(json.dumps(u.to_dict(), ensure_ascii=False))
        else:
            print(f"[{_format_time(u.start_s)}-{_format_time(u.end_s)}] {u.channel}: {u.text}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.server import serve
    from service.settings import get_settings

    settings = get_settings().model_copy(update={"host": args.host or get_settings().host,
                                                  "port": args.port or get_settings().port})
    serve(settings)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from service.cli.replay import run_replay_command

    channels = [c.strip() for c in args.channels.split(",")]
    try:
        return run_replay_command(args.file, args.call_id, args.url, args.realtime, args.twilio, args.rate,
                                  channels, args.json, args.token or os.environ.get("HUIFANG_TOKEN"))
    except OSError as e:
        raise ServiceError("usage", f"cannot reach {args.url}: {e}") from e


def _id_arg(kind: IdKind) -> Callable[[str], str]:
    """An argparse type: an id of `kind` as every other path takes it (service/ids.py)."""

    def parse(value: str) -> str:
        try:
            return check_id(value, kind)
        except BadId as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    parse.__name__ = f"{kind}_id"
    return parse


def cmd_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.call import split_roles
    from service.cli.score import score_file
    from service.settings import get_settings

    return score_file(get_settings(), Path(args.file), Path(args.loan_file) if args.loan_file else None,
                      split_roles(args.channels), args.call_id, args.json, sys.stderr.isatty() and not args.no_progress)


def cmd_score_dir(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.call import split_roles
    from service.cli.score import score_dir
    from service.settings import get_settings

    return score_dir(get_settings(), Path(args.folder), split_roles(args.channels),
                     sys.stderr.isatty() and not args.no_progress)


def cmd_score_archive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.call import split_roles
    from service.cli.archive import score_archive
    from service.settings import get_settings

    source, ray = args.source, args.ray
    if source is None and ray is not None and os.path.exists(ray):
        source, ray = ray, "local"  # `--ray MANIFEST`: the bare flag took the source as its address
    if source is None:
        raise ServiceError("usage", "score-archive needs a manifest or a folder (with --ray, put it first)")
    if args.workers < 1 or (args.actors is not None and args.actors < 1) or args.cpus_per_actor < 1:
        raise ServiceError("usage", "--workers, --actors and --cpus-per-actor must be at least 1")
    if args.interval <= 0:
        raise ServiceError("usage", "--interval must be more than 0 seconds")
    return score_archive(get_settings(), Path(source), split_roles(args.channels), ray, args.actors,
                         args.cpus_per_actor, args.workers, args.enqueue_only, args.skip_invalid, args.interval)


def cmd_audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from service import bootstrap
    from service.reports import answer_labels
    from service.settings import get_settings
    from service.store import audit
    from service.store.anchor import Checkpoint, load_public_key, public_key_path, read_checkpoints

    settings = get_settings()
    checkpoints_file = Path(args.checkpoints) if args.checkpoints else settings.audit_checkpoints_file
    key_file = Path(args.public_key) if args.public_key else public_key_path(settings.audit_key_path)
    store = bootstrap.open_store(settings, anchored=False)
    points: list[Checkpoint] = []
    problems: list[str] = []
    if not args.no_checkpoints:
        if not checkpoints_file.exists() or not key_file.exists():
            problems.append(f"no checkpoints ({checkpoints_file}) or no public key ({key_file}): a cut or "
                            "rewritten chain cannot be told from an intact one (--no-checkpoints to check the "
                            "database alone)")
        else:
            points, problems = read_checkpoints(checkpoints_file, load_public_key(key_file))
    result = audit.verify(store, points, labels_of=answer_labels)
    store.close()
    problems += result.problems
    if not problems:
        print(f"audit log intact: {result.entries} entries, {len(points)} signed checkpoints hold, every stored "
              "call matches its audited report")
        return 0
    result = audit.Verification(False, result.entries, tuple(problems))
    for problem in result.problems:
        print(f"audit: {problem}", file=sys.stderr)
    print(f"audit log BROKEN: {len(result.problems)} problem(s) in {result.entries} entries", file=sys.stderr)
    return 1


def cmd_coaching(args: argparse.Namespace) -> int:
    from service.cli.coaching import rebuild_command
    from service.settings import get_settings

    return rebuild_command(get_settings(), args.all)


def cmd_token(args: argparse.Namespace) -> int:
    from service.auth import hash_token, new_token

    if args.role == "agent" and not args.agent_id:
        raise ServiceError("usage", "an agent token needs --agent-id")
    token = new_token()
    entry = {"name": args.name, "role": args.role, "sha256": hash_token(token)}
    if args.agent_id:
        entry["agent_id"] = args.agent_id
    import yaml

    print(f"token: {token}")
    print("# add to the tokens file (HUIFANG_AUTH__TOKENS_FILE) under `tokens:`; the token itself is not stored")
    print(yaml.safe_dump([entry], allow_unicode=True).rstrip())
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from service.cli.outbox import list_dead, requeue_message, run_outbox
    from service.settings import get_settings

    if args.action == "requeue":
        if not args.message_id:
            raise ServiceError("usage", "outbox requeue needs the message id")
        return requeue_message(get_settings(), args.message_id)
    if args.message_id:
        raise ServiceError("usage", f"outbox {args.action} takes no message id")
    return list_dead(get_settings()) if args.action == "dead" else run_outbox(get_settings(), args.once)


def cmd_plan(args: argparse.Namespace) -> int:
    from service import bootstrap
    from service.settings import get_settings

    settings = get_settings()
    store = bootstrap.open_store(settings)
    try:
        book = bootstrap.build_loanbook(settings, store, bootstrap.load_assessor(settings, with_classifier=False))
        if args.customer:
            plan = book.plan(args.customer)
            print(json.dumps({"customer_id": args.customer, "tier": plan.tier, "reasons": list(plan.reasons),
                              "created": len(plan.create), "changed": len(plan.change)}, ensure_ascii=False))
        else:
            print(json.dumps({"planned": book.plan_due()}))
    finally:
        store.close()
    return 0


def cmd_demo_seed(args: argparse.Namespace) -> int:
    from service.cli.demo_seed import seed_command
    from service.settings import get_settings

    return seed_command(get_settings(), args.if_empty)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="huifang", description="Speech-to-risk for post-loan follow-up calls")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/websocket service")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1, HUIFANG_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000, HUIFANG_PORT)")
    serve.set_defaults(func=cmd_serve)

    tr = sub.add_parser("transcribe", help="print the utterances of a recording")
    tr.add_argument("file", help="audio file (WAV PCM/G.711, FLAC, MP3, ... any rate from 8 to 48 kHz)")
    tr.add_argument("--channels", default=None,
                    help="comma-separated role of each channel in order (default agent,customer for stereo)")
    tr.add_argument("--json", action="store_true", help="one JSON object per utterance")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    tr.set_defaults(func=cmd_transcribe)

    rp = sub.add_parser("replay", help="stream a recording through the live socket and print the events")
    rp.add_argument("file", help="a stereo (agent, customer) or mono recording")
    rp.add_argument("--call-id", required=True, type=_id_arg("call"), help="call id used in the socket URL")
    rp.add_argument("--url", default="ws://127.0.0.1:8000", help="service base URL (default ws://127.0.0.1:8000)")
    rp.add_argument("--realtime", action="store_true", help="send at real-time pace, like a live call")
    rp.add_argument("--twilio", action="store_true", help="speak the Twilio Media Streams protocol (8 kHz u-law)")
    rp.add_argument("--rate", type=int, choices=(8000, 16000), default=None,
                    help="stream at this rate (8000 is sent as u-law, 16000 as PCM16; default 16000)")
    rp.add_argument("--channels", default="agent,customer", help="roles of the file's channels in order")
    rp.add_argument("--json", action="store_true", help="print events as raw JSON")
    rp.add_argument("--token", default=None, help="an ingest (or admin) token (default: $HUIFANG_TOKEN)")
    rp.set_defaults(func=cmd_replay)

    sc = sub.add_parser("score", help="score a recorded call and print its report (nothing is stored)")
    sc.add_argument("file", help="stereo recording (agent, customer unless --channels says otherwise)")
    sc.add_argument("--loan-file", default=None, help="JSON loan file (or an object with a `loan_file` key)")
    sc.add_argument("--channels", default="agent,customer", help="roles of the file's channels in order")
    sc.add_argument("--call-id", default=None, type=_id_arg("call"),
                    help="call id in the report (default: the file name)")
    sc.add_argument("--json", action="store_true", help="print the report as JSON")
    sc.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    sc.set_defaults(func=cmd_score)

    sd = sub.add_parser("score-dir", help="score every recording of a folder into the database")
    sd.add_argument("folder", help="folder of recordings; NAME.json beside NAME.flac is its loan file")
    sd.add_argument("--channels", default="agent,customer", help="roles of the files' channels in order")
    sd.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    sd.set_defaults(func=cmd_score_dir)

    sa = sub.add_parser("score-archive", help="score an archive of recorded calls through the job queue, in this "
                        "process or on Ray; run it again to resume")
    sa.add_argument("source", nargs="?", help="manifest CSV with the columns audio, call_id, loan_file (a JSON "
                    "object or the path of a JSON file; paths relative to the manifest), or a folder of recordings "
                    "as score-dir reads it; the audio is read in place, never copied or modified")
    sa.add_argument("--channels", default="agent,customer", help="roles of the files' channels in order")
    sa.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="score on a pool of Ray actors: alone, a local Ray runtime of this machine; with an "
                    "address (auto, HOST:PORT, ray://HOST:10001) on that cluster (pip install 'huifang[ray]')")
    sa.add_argument("--actors", type=int, default=None, help="with --ray: actors, each loading the model once "
                    "(default: the cluster's CPUs / --cpus-per-actor)")
    sa.add_argument("--cpus-per-actor", type=int, default=1, help="with --ray: CPUs reserved by, and decoding "
                    "threads of, each actor (default 1)")
    sa.add_argument("--workers", type=int, default=1, help="without --ray: jobs scored at once in this process "
                    "(default 1: one decode already uses every core)")
    sa.add_argument("--enqueue-only", action="store_true", help="only queue the calls: `huifang serve` replicas "
                    "(or a later run) score them")
    sa.add_argument("--skip-invalid", action="store_true", help="queue the valid calls even when some rows of the "
                    "manifest are not (they are listed)")
    sa.add_argument("--interval", type=float, default=10.0, help="seconds between progress lines (default 10)")
    sa.set_defaults(func=cmd_score_archive)

    au = sub.add_parser("audit", help="check the audit log")
    au.add_argument("action", choices=("verify",), help="verify: walk the hash chain, check stored calls against "
                    "their audited reports and the chain against its signed checkpoints")
    au.add_argument("--checkpoints", default=None, help="checkpoint file (default HUIFANG_PRIVACY__AUDIT_CHECKPOINTS)")
    au.add_argument("--public-key", default=None, help="the signing key's public half (default the audit key "
                    "file's .pub)")
    au.add_argument("--no-checkpoints", action="store_true", help="check the database alone")
    au.set_defaults(func=cmd_audit)

    co = sub.add_parser("coaching", help="fill coaching's per-call rows for calls scored before it existed")
    co.add_argument("action", choices=("rebuild",), help="rebuild: write the rows calls lack (docs/coaching.md)")
    co.add_argument("--all", action="store_true", help="recompute every call's row (after editing sensitivities)")
    co.set_defaults(func=cmd_coaching)

    tk = sub.add_parser("token", help="make a new access token and print its tokens-file entry")
    tk.add_argument("--name", required=True, help="who or what uses it (a switch, an agent's name)")
    tk.add_argument("--role", required=True, choices=("ingest", "agent", "supervisor", "admin"))
    tk.add_argument("--agent-id", default=None, type=_id_arg("agent"),
                    help="for agent tokens: the agent id their calls carry")
    tk.set_defaults(func=cmd_token)

    ob = sub.add_parser("outbox", help="send queued messages to customers, list dead letters, requeue one "
                        "(docs/outbox.md)")
    ob.add_argument("action", choices=("run", "dead", "requeue"), help="run: send what is due (with --once, then "
                    "exit); dead: list dead letters; requeue ID: queue a dead message again")
    ob.add_argument("message_id", nargs="?", default=None, help="requeue: the message's id")
    ob.add_argument("--once", action="store_true", help="run: send what is due now, then exit")
    ob.set_defaults(func=cmd_outbox)

    pl = sub.add_parser("plan", help="re-plan the loan book: every customer not planned today (the daily job), or "
                        "one customer (docs/loanbook.md)")
    pl.add_argument("--customer", default=None, type=_id_arg("customer"), help="plan only this customer, now")
    pl.set_defaults(func=cmd_plan)

    ds = sub.add_parser("demo-seed", help="fill an empty database with a small synthetic loan book (demo calls "
                        "transcribed once, scored under several loan files)")
    ds.add_argument("--if-empty", action="store_true", help="do nothing (and succeed) when calls are stored")
    ds.set_defaults(func=cmd_demo_seed)

    from service.cli.feedback import register as register_feedback
    from service.cli.rescore import register as register_rescore

    register_rescore(sub)
    register_feedback(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `huifang` command."""
    from pydantic import ValidationError

    from nlu.classifier import ClassifierUnavailableError
    from pipeline.recording import RecordingError
    from service.protocol import validation_problems

    parser = build_parser()
    args = parser.parse_args(argv)
    install_logging(logging.WARNING)
    try:
        from service.settings import get_settings

        if get_settings().privacy.private_files:
            os.umask(0o077)  # what score-dir, score-archive and demo-seed write under the data directory is private
        return int(args.func(args))
    except (AsrError, ClassifierUnavailableError, RecordingError, ServiceError) as e:
        print(f"huifang: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as e:
        print(f"huifang: error: invalid settings (HUIFANG_* variables or .env): {validation_problems(e)}",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
