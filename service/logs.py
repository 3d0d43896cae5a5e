"""Logging that cannot leak personal data: personal numbers are masked in every record, and the websocket
library's frame dumps (debug level; they hold transcripts and loan files) are dropped."""

from __future__ import annotations

import copy
import logging
from typing import Any

from nlu.pii import apply_masks, find_numbers

#: The websockets library logs each frame as "< %s" / "> %s" at debug level.
_FRAME_DUMPS = ("< %s", "> %s")


class PiiLogFilter(logging.Filter):
    """Attach to handlers: masks ID, phone and card numbers in the formatted message, drops frame dumps."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _FRAME_DUMPS:
            return False
        message = record.getMessage()
        masked = apply_masks(message, find_numbers(message))
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
