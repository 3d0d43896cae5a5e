"""Logging that cannot leak personal data or credentials: personal numbers and access tokens are masked in every
record, and the websocket library's frame dumps (debug level; they hold transcripts and loan files) are
dropped. Ids are logged as they are (an operator must tell calls apart): service/ids.py refuses any id that looks
like a personal number, so a valid id holds none."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from nlu.pii import apply_masks, find_numbers
from service.ids import ID_TOKEN, is_logged_as_is

#: The websockets library logs each frame as "< %s" / "> %s" at debug level.
_FRAME_DUMPS = ("< %s", "> %s")


#: A credential in a URL (`?token=`, `&ticket=`), a header value, or a huifang token anywhere.
_CREDENTIAL = re.compile(r"((?:token|ticket)=)[^&\s\"']+|(Bearer\s+)\S+|\bhf_[A-Za-z0-9_-]{8,}", re.IGNORECASE)


def scrub(text: str) -> str:
    """`text` with access tokens and personal numbers masked."""
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1) or m.group(2) or ''}[masked]", text)
    ids = [(m.start(), m.end()) for m in ID_TOKEN.finditer(text) if is_logged_as_is(m.group())]
    return apply_masks(text, [s for s in find_numbers(text)
                              if not any(start <= s.start and s.end <= end for start, end in ids)])


class PiiLogFilter(logging.Filter):
    """Attach to handlers: masks ID, phone and card numbers and access tokens, drops frame dumps. A record whose
    arguments are a tuple keeps its shape (uvicorn's access formatter reads them one by one): each argument is
    masked on its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _FRAME_DUMPS:
            return False
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in record.args)
            if isinstance(record.msg, str):
                record.msg = scrub(record.msg)
            return True
        message = record.getMessage()
        masked = scrub(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install(root_level: int = logging.WARNING) -> None:
    """For command-line tools: a stderr handler on the root logger, with the filter."""
    logging.basicConfig(level=root_level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(PiiLogFilter())


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration with the filter on every handler, and the root logger (huifang's own
    modules) on the same output."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["pii"] = {"()": "service.logs.PiiLogFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("pii")
    config["root"] = {"handlers": ["default"], "level": level.upper()}
    return config
