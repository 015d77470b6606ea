"""A small JSON-over-HTTPS client shared by the ticket and status-page adapters.

It owns what every vendor API here has in common: one request bounded by a timeout, no
redirects (a redirect means a wrong base URL, and following it would re-send credentials),
and the translation of answers into the core's errors: 429 (and the vendor's own rate-limit
codes) and 5xx are TransientError carrying the Retry-After hint, 408 and network failures
are TransientError, other 4xx are PermanentError. Credentials go only in headers and are
scrubbed from any text that could quote them back; nothing here logs.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from adapters.pagerduty import parse_retry_after
from gateway.ports import PermanentError, TransientError

_REASON_MAX = 300


@dataclass(frozen=True)
class Answer:
    """A successful answer: status, decoded JSON body (None when empty) and headers."""

    status: int
    body: Any
    headers: Mapping[str, str]


class JsonApi:
    """Requests to one vendor's API (the session is borrowed, never created here)."""

    def __init__(
        self,
        vendor: str,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        headers: Mapping[str, str],
        secrets: Collection[str],
        timeout_s: float = 15.0,
        retry_statuses: Collection[int] = (429,),
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._headers = {"Accept": "application/json", **headers}
        self._secrets = [s for s in secrets if s]
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._retry_statuses = frozenset(retry_statuses)

    def __repr__(self) -> str:
        return f"JsonApi(vendor={self.vendor!r}, base_url={self.base_url!r})"

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request; a 2xx answer, or the matching error."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        if not url.startswith(self.base_url + "/"):
            # A pagination link elsewhere would carry our credentials to another host.
            raise PermanentError(f"{self.vendor} pointed outside its base URL")
        data = None if json_body is None else json.dumps(json_body, default=str).encode()
        all_headers = {**self._headers, **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                params=params,
                headers=all_headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                got_headers = dict(response.headers)
                raw = await response.read()
        except TimeoutError as exc:
            raise TransientError(
                f"{self.vendor} did not answer within {self._timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransientError(
                self.scrub(f"{self.vendor} unreachable: {type(exc).__name__}")
            ) from exc
        if 200 <= status < 300:
            return Answer(status, _decode(raw), got_headers)
        raise self.error(status, raw, got_headers)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> Exception:
        """The core's error for a non-2xx answer."""
        hint = parse_retry_after(headers.get("Retry-After"), datetime.now(UTC))
        if status in self._retry_statuses:
            return TransientError(
                f"{self.vendor} rate limited or busy ({status})",
                retry_after_s=hint if hint is not None else 1.0,
            )
        if status == 408 or status >= 500:
            return TransientError(f"{self.vendor} server error ({status})", retry_after_s=hint)
        if status in (401, 403):
            return PermanentError(f"{self.vendor} refused the credentials ({status})")
        if 300 <= status < 400:
            return PermanentError(
                f"{self.vendor} answered with a redirect ({status}): check the base URL"
            )
        detail = self.scrub(raw[:_REASON_MAX].decode("utf-8", "replace"))
        return PermanentError(f"{self.vendor} rejected the request ({status}): {detail}")

    def scrub(self, text: str) -> str:
        """Remove credentials from text that may quote our request."""
        for secret in self._secrets:
            text = text.replace(secret, "<credential>")
        return text


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise TransientError("answer is not JSON") from exc


def obj(value: Any, *path: str) -> Any:
    """value[path[0]][path[1]]…, or None where the shape differs (vendors' bodies vary)."""
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
