"""Outbound mail behind the MailSender port, through an SMTP relay.

SmtpRelayMailer hands the message to a submission relay with aiosmtplib and maps SMTP replies
onto the core's errors: 5xx is PermanentError, 4xx and network trouble are TransientError.
The drop folder of .eml files is adapters.mail_folder (imported without aiosmtplib, which
only a relay needs).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import ssl
from collections.abc import Mapping
from typing import Any

import aiosmtplib

from gateway.ports import LinkDown, PermanentError, TransientError

__all__ = ["SmtpRelayMailer"]

_REPLY_MAX_CHARS = 200


class SmtpRelayMailer:
    """Submits each message to one SMTP relay.

    One connection per send: outbound mail is a handful of notifications, and a fresh session
    never inherits a half-broken one (a pooled connection would need its own liveness checks).

    `starttls=True` (the default) requires the relay to offer STARTTLS and refuses to send in
    clear text otherwise; turn it off only for a relay on loopback or a trusted link.
    `use_tls=True` means implicit TLS (usually port 465), which already encrypts, so STARTTLS is
    not attempted on top of it.
    """

    def __init__(
        self,
        hostname: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        use_tls: bool = False,
        timeout_s: float = 30,
        helo_name: str | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._hostname = hostname
        self._port = port
        self._username = username
        self._password = password
        self._starttls = starttls and not use_tls
        self._use_tls = use_tls
        self._timeout_s = timeout_s
        self._helo_name = helo_name

    def __repr__(self) -> str:
        return (
            f"SmtpRelayMailer(hostname={self._hostname!r}, port={self._port!r}, "
            f"username={self._username!r}, starttls={self._starttls!r}, "
            f"use_tls={self._use_tls!r}, timeout_s={self._timeout_s!r})"
        )

    async def send(self, message: bytes, mail_from: str, rcpt_to: str) -> Mapping[str, Any]:
        """Deliver to the relay; returns its final reply to DATA."""
        for address in (mail_from, rcpt_to):
            # aiosmtplib would quietly keep the part before a CR/LF and send to that; an
            # address with control characters is a bug upstream and must not be "repaired".
            if any(ord(char) < 0x20 or char == "\x7f" for char in address):
                raise PermanentError("envelope address contains control characters")
        client = aiosmtplib.SMTP(
            hostname=self._hostname,
            port=self._port,
            use_tls=self._use_tls,
            start_tls=False,  # STARTTLS is done by hand below, to fail with a clear reason
            timeout=self._timeout_s,  # bounds each command, so every await here is bounded
            local_hostname=self._helo_name,
        )
        try:
            reply = await self._deliver(client, message, mail_from, rcpt_to)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # from None: keep whatever the relay said about our credentials out of the chain.
            raise _auth_error(exc) from None
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            error = self._translate(exc)
            # The original exception carries the relay's unredacted words: keep it out of
            # the chain (and so out of logged tracebacks) whenever something was redacted.
            raise error from (exc if error.reason == _classify(exc).reason else None)
        finally:
            client.close()
        text = redact_credentials(reply, self._username, self._password)
        return {"smtp_code": 250, "smtp_message": _clip(text)}

    async def _deliver(
        self, client: aiosmtplib.SMTP, message: bytes, mail_from: str, rcpt_to: str
    ) -> str:
        await client.connect()
        if self._starttls:
            await client.ehlo()
            if not client.supports_extension("starttls"):
                raise PermanentError(
                    "relay does not offer STARTTLS; refusing to send in clear text "
                    "(disable starttls only for a trusted local relay)"
                )
            await client.starttls()
        if self._username is not None and self._password is not None:
            await client.login(self._username, self._password)
        # A single recipient: a refusal raises SMTPRecipientsRefused instead of returning.
        _, reply = await client.sendmail(mail_from, [rcpt_to], message)
        # The relay already took the message (250 to DATA): a lost QUIT must not turn into a
        # retry that delivers it twice.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
        return reply

    def _translate(self, exc: Exception) -> TransientError | PermanentError:
        error = _classify(exc)
        redacted = redact_credentials(error.reason, self._username, self._password)
        return error if redacted == error.reason else type(error)(redacted)


_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")
_REDACTED = "<redacted>"


def redact_credentials(text: str, username: str | None, password: str | None) -> str:
    """`text` (a relay's reply, turned into an error or a result) without our credentials.

    Relays echo what they were sent, AUTH included: the password itself, and base64 blobs
    that decode to it (AUTH LOGIN) or to "authzid NUL user NUL password" (AUTH PLAIN, whose
    NUL is the tell even when we cannot know the exact blob) are replaced."""
    if password:
        text = text.replace(password, "<password>")
    secret = password.encode() if password else None
    for token in set(_BASE64_TOKEN.findall(text)):
        try:
            decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        if (
            b"\0" in decoded
            or (secret and secret in decoded)
            or (username and decoded == username.encode())
        ):
            text = text.replace(token, _REDACTED)
    return text


def _auth_error(exc: aiosmtplib.SMTPAuthenticationError) -> TransientError | PermanentError:
    if exc.code == 535:
        return PermanentError("relay rejected our credentials")
    if exc.code >= 500:  # 534 mechanism too weak, 538 encryption required: configuration
        return PermanentError(f"relay refused to authenticate us ({exc.code})")
    return TransientError(f"relay could not check our credentials now ({exc.code})")


def _classify(exc: Exception) -> TransientError | PermanentError:
    """Map one aiosmtplib, ssl or socket failure onto the core's two errors."""
    if _is_certificate_failure(exc):
        return PermanentError("relay's TLS certificate failed verification")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _recipient_refusal(exc)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, f"relay {_stage(exc)}: {exc.code} {exc.message}")
    if isinstance(exc, OSError):
        # Refused or dropped connections and timeouts: aiosmtplib's SMTPServerDisconnected,
        # SMTPConnectError and SMTPTimeoutError are ConnectionError/TimeoutError, so OSErrors.
        # No answer to act on: the relay is away (LinkDown), not refusing.
        return LinkDown(_clip(f"relay connection failed: {exc or type(exc).__name__}"))
    if isinstance(exc, aiosmtplib.SMTPException):
        # What remains is a capability mismatch (no AUTH offered, no SMTPUTF8): configuration.
        return PermanentError(_clip(f"relay cannot take this message: {exc.message}"))
    return PermanentError(_clip(f"message refused before sending: {exc}"))  # bad address


def _recipient_refusal(exc: aiosmtplib.SMTPRecipientsRefused) -> TransientError | PermanentError:
    if not exc.recipients:
        return TransientError("relay refused the recipient without a reply")
    refused = exc.recipients[0]  # one recipient per send
    return _by_code(refused.code, f"relay refused the recipient: {refused.code} {refused.message}")


def _by_code(code: int, reason: str) -> TransientError | PermanentError:
    # 5xx: the relay will never accept this; 4xx (and anything odd): worth another try.
    if 500 <= code < 600:
        return PermanentError(_clip(reason))
    return TransientError(_clip(reason))


def _stage(exc: aiosmtplib.SMTPResponseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "refused the sender"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "refused the message"
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return "refused our greeting"
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return "refused the connection"
    return "replied"


def _is_certificate_failure(exc: BaseException) -> bool:
    # aiosmtplib wraps implicit-TLS handshake failures in SMTPConnectError; look underneath.
    return isinstance(exc, ssl.SSLCertVerificationError) or isinstance(
        exc.__cause__, ssl.SSLCertVerificationError
    )


def _clip(text: str) -> str:
    return text if len(text) <= _REPLY_MAX_CHARS else text[: _REPLY_MAX_CHARS - 1] + "…"
