"""The canary's way in: our own SMTP listener, over loopback, like any tenant's mail."""

from __future__ import annotations

import aiosmtplib

from gateway.ports import TransientError


class LoopbackSubmit:
    """Submits one message to the daemon's SMTP listener."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        # A listener on every address is reached on loopback.
        self._host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        self._port, self._timeout_s = port, timeout_s

    async def __call__(self, mail_from: str, rcpt_to: str, raw: bytes) -> None:
        """Send; TransientError when the listener does not take it."""
        try:
            await aiosmtplib.send(
                raw,
                sender=mail_from,
                recipients=[rcpt_to],
                hostname=self._host,
                port=self._port,
                timeout=self._timeout_s,
                start_tls=False,
                use_tls=False,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientError(f"SMTP listener did not take it ({type(exc).__name__})") from None
