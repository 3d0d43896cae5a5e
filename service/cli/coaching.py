"""`huifang coaching rebuild`: coaching rows (`agent_call_stats`) for calls scored before migration 0005, or for
every call (`--all`) after the call script's sensitivities changed. New reports get theirs as they are stored."""

from __future__ import annotations

from service.coaching.repository import rebuild
from service.settings import Settings
from service.store import Store


def rebuild_command(settings: Settings, everything: bool) -> int:
    store = Store(settings.db_url)
    try:
        store.migrate()
        written = rebuild(store, everything=everything)
    finally:
        store.close()
    print(f"coaching: {written} call(s) {'recomputed' if everything else 'filled in'}")
    return 0
