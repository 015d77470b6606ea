"""`chatops-gateway notify-failure` (the unit's OnFailure= hook), wired to its adapters.

Owns the one-shot path that runs when the service has failed for good: page that it failed
and ping the heartbeat's failure URL. It imports aiohttp and the adapters only when called.
"""

from __future__ import annotations

from gateway.config.model import Config
from gateway.ports import PermanentError, TransientError
from gateway.run.failure import failure_page


async def notify_failure(config: Config, unit: str, reason: str) -> list[str]:
    """Page that the service failed for good, and ping the heartbeat's failure URL;
    returns what was notified. Raises TransientError/PermanentError when nothing could be."""
    import aiohttp  # noqa: PLC0415  (lazy: only this command needs it)

    from adapters.heartbeat_http import HttpPinger  # noqa: PLC0415
    from adapters.pagerduty import PagerDutyPager  # noqa: PLC0415

    done: list[str] = []
    errors: list[TransientError | PermanentError] = []
    pd, nf, hb = config.pagerduty, config.notify_failure, config.heartbeat
    key = nf.routing_key or (pd.routing_key if pd else None)
    async with aiohttp.ClientSession() as session:
        if key is not None:
            pager = PagerDutyPager(
                routing_key=config.read_secret(key),
                base_url=pd.url if pd else "https://events.pagerduty.com",
                session=session,
                timeout_s=pd.timeout_s if pd else 10.0,
            )
            page = failure_page(unit, reason, pd.source if pd else "chatops-gateway", nf.severity)
            try:
                await pager.trigger(page)
                done.append("pagerduty")
            except (TransientError, PermanentError) as exc:
                errors.append(exc)
        if hb is not None and hb.fail_url is not None:
            pinger = HttpPinger(
                hb.url,
                session=session,
                method=hb.method,
                fail_url=hb.fail_url,
                timeout_s=hb.timeout_s,
            )
            try:
                await pinger.ping(False, f"{unit} failed: {reason}")
                done.append("heartbeat")
            except (TransientError, PermanentError) as exc:
                errors.append(exc)
    if not done:
        raise (
            errors[0]
            if errors
            else PermanentError(
                "nothing to notify: configure [pagerduty] (or [notify_failure] routing_key) "
                "or [heartbeat] fail_url"
            )
        )
    return done
