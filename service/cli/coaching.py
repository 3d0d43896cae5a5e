"""`huifang coaching rebuild`: coaching rows (`agent_call_stats`) for calls scored before migration 0005, or for
every call (`--all`) after the call script's sensitivities changed. New reports get theirs as they are stored."""

from __future__ import annotations

from nlu.script import load_script
from service import bootstrap
from service.coaching.repository import rebuild
from service.settings import Settings


def rebuild_command(settings: Settings, everything: bool) -> int:
    sensitivity = bootstrap.sensitivities(load_script(settings.nlu.script_file))
    store = bootstrap.open_store(settings)
    try:
        written = rebuild(store, sensitivity, everything=everything)
    finally:
        store.close()
    print(f"coaching: {written} call(s) {'recomputed' if everything else 'filled in'}")
    return 0
