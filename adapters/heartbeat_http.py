"""The heartbeat's HTTP side: healthchecks-style pings (GET or POST to a URL) with aiohttp.

Works with healthchecks.io (`/ping/<uuid>` and `/ping/<uuid>/fail`), Cronitor, Grafana
OnCall's and Better Stack's heartbeat URLs, Uptime Kuma push monitors and the like: any 2xx
is a ping taken. A POST carries a one-line summary (the problems, or "healthy"), which
healthchecks.io shows with the ping; never a secret.
"""

from __future__ import annotations

import aiohttp

from gateway.ports import LinkDown, PermanentError, TransientError


class HttpPinger:
    """Pings `url` (healthy) or `fail_url` (unhealthy, when given)."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession,
        method: str = "GET",
        fail_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._url, self._fail_url = url, fail_url
        self._method = method
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:  # the URL may hold a secret token: never shown
        return f"HttpPinger(method={self._method!r})"

    async def ping(self, healthy: bool, summary: str) -> bool:
        """One ping; False when there is no URL for this case (unhealthy, no fail_url)."""
        url = self._url if healthy else self._fail_url
        if url is None:
            return False
        body = summary.encode()[:1000] if self._method == "POST" else None
        try:
            async with self._session.request(
                self._method, url, data=body, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError:
            raise LinkDown("monitor did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise LinkDown(f"monitor unreachable ({type(exc).__name__})") from None
        if 200 <= status < 300:
            return True
        if status in (400, 401, 403, 404):
            raise PermanentError(f"monitor refused the ping ({status}): check the URL")
        raise TransientError(f"monitor answered {status}")
