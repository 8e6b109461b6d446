"""Request ids: a client's own X-Request-Id is kept, else a new one; every log line carries it."""

from __future__ import annotations

import contextvars
import logging
import random
import re

REQUEST_ID_HEADER = "X-Request-Id"
# A client's id is kept when it is short printable ASCII; anything else is replaced.
_ACCEPTABLE_ID = re.compile(r"^[\x21-\x7e]{1,200}$")

# Ids need to be unique, not secret: a seeded PRNG costs far less than os.urandom per request.
_ids = random.Random()

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def request_id_from(header_value: str | None) -> str:
    if header_value is not None and _ACCEPTABLE_ID.match(header_value):
        return header_value
    return f"{_ids.getrandbits(128):032x}"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record: the id of the request being served, or '-'."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def install_request_id_logging() -> None:
    """Give every handler of the root logger the filter (after logging.basicConfig)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
