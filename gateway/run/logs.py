"""structlog, configured once: JSON lines for journald, a console renderer on a terminal.

When standard output is the journal (systemd sets `$JOURNAL_STREAM` to its device and inode),
each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>`
debug), which journald strips and records, so `journalctl -p err` finds our errors.

The libraries' stdlib loggers are routed through the same processors. Their protocol
logging is off unless the level is "debug" (only their warnings and errors pass, and of
aiosmtpd's "mail.log" only errors): aiosmtpd logs every command with the envelope addresses
at INFO (128 bytes of log for a 6-byte NOOP) and each unrecognised one at WARNING,
matrix-nio every room event at INFO, aioimaplib whole messages at DEBUG; our own `smtp.*`,
`imap.*` and `matrix.*` events say what an operator needs. The event loop's accept errors
("socket.accept() out of system resource", when descriptors run out) are logged at most
once per interval per listening socket, with the number left out. Secrets and bodies are
never passed to a logger in this codebase; the redactor below is a second line of defence
for values that look like credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("password", "token", "secret", "routing_key", "authorization", "api_key")


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


# Python's levels as syslog priorities (sd-daemon(3): the `<N>` prefix journald understands).
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def _priority(levelno: int) -> int:
    return next((prio for floor, prio in _PRIORITY if levelno >= floor), 7)


def to_journal(stream: Any) -> bool:
    """True when `stream` is the journal's stream for this process ($JOURNAL_STREAM)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    """Prefix each formatted line with its syslog priority for journald."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_priority(record.levelno)}>{self._inner.format(record)}"


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog and the stdlib root logger."""
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        # The level check comes first: a filtered-out event costs almost nothing.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JournalFormatter(formatter) if to_journal(sys.stdout) else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = getattr(logging, level.upper())
    root.setLevel(numeric)
    debugging = numeric <= logging.DEBUG
    for noisy in _LIBRARIES:
        logging.getLogger(noisy).setLevel(numeric if debugging else max(numeric, logging.WARNING))
    # aiosmtpd's warnings are per-command lines too (each unrecognised command, with the
    # client's address): our smtp.* events say what matters, once per session.
    logging.getLogger("mail.log").setLevel(numeric if debugging else logging.ERROR)
    # asyncio reports accept errors and unhandled task failures at ERROR: kept, but see
    # quiet_accept_errors for the flood of the former.
    logging.getLogger("asyncio").setLevel(max(numeric, logging.INFO))


# Libraries that log protocol traffic: "mail.log" is aiosmtpd's logger.
_LIBRARIES = ("aiosmtpd", "aioimaplib", "nio", "aiohttp", "peewee")
ACCEPT_ERROR_INTERVAL_S = 60.0


class AcceptErrorFilter:
    """An event loop exception handler that passes on everything, except that the loop's
    "socket.accept() out of system resource" (and other accept failures) for one listening
    socket go on at most once per `interval_s`, with how many were left out."""

    def __init__(
        self,
        interval_s: float = ACCEPT_ERROR_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        then: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None,
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._then = then
        self._last: dict[int, float] = {}
        self.suppressed: dict[int, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("socket.accept()"):
            sock = context.get("socket")
            key = sock.fileno() if sock is not None else -1
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self.suppressed[key] = self.suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            left_out = self.suppressed.pop(key, 0)
            if left_out:
                context = {
                    **context,
                    "message": f"{message} ({left_out} more like it "
                    f"in the last {self._interval_s:.0f} s)",
                }
        if self._then is not None:
            self._then(loop, context)
        else:
            loop.default_exception_handler(context)


def quiet_accept_errors(
    loop: asyncio.AbstractEventLoop, interval_s: float = ACCEPT_ERROR_INTERVAL_S
) -> None:
    """Install AcceptErrorFilter on `loop` (once; an existing handler is kept behind it)."""
    current = loop.get_exception_handler()
    if isinstance(current, AcceptErrorFilter):
        return
    loop.set_exception_handler(AcceptErrorFilter(interval_s, then=current))
