"""structlog, configured once: JSON lines for journald, a console renderer on a terminal.

When standard output is the journal (systemd sets `$JOURNAL_STREAM` to its device and inode),
each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>`
debug), which journald strips and records, so `journalctl -p err` finds our errors.

The libraries' stdlib loggers are routed through the same processors and capped at INFO
(aioimaplib and others log whole messages at DEBUG). Secrets and bodies are never passed
to a logger in this codebase; the redactor below is a second line of defence for values
that look like credentials.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
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
    renderer: Any = (structlog.dev.ConsoleRenderer() if console
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        # The level check comes first: a filtered-out event costs almost nothing.
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
    for noisy in ("aiosmtpd", "mail.log", "aioimaplib", "nio", "aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
