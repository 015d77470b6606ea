"""Wiring of intake links: the SMTP listener, IMAP mailboxes, Matrix, the alert webhooks.

Owns which intake adapters are built from the configuration and with what settings. Each
adapter (and the library behind it: aioimaplib, matrix-nio, aiohttp) is imported here, where
it is built, and only when its section is configured: start-up time is mostly imports.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from adapters.smtp_intake import SmtpIntakeServer
from adapters.smtp_limits import SmtpLimits
from gateway.config.model import Config
from gateway.deliver.external import security_rooms
from gateway.plan.alarm_rooms import alarm_rooms
from gateway.plan.e2ee import PinnedDevice
from gateway.ports import Store
from gateway.run.alert_intake import AlertIntake
from gateway.run.intake import MailIntake
from gateway.run.service import Service
from gateway.run.worker import Clock
from rules.types import Mailbox

if TYPE_CHECKING:
    from adapters.alerts_http import AlertWebhookServer
    from adapters.imap_intake import ImapIntake
    from adapters.matrix import MatrixLink
    from adapters.matrix_crypto import MatrixCrypto
    from adapters.matrix_crypto_share import SharedFiles


def smtp_server(config: Config, intake: MailIntake) -> SmtpIntakeServer:
    """The SMTP listener with its limits (not yet listening)."""
    s = config.smtp
    return SmtpIntakeServer(
        intake,
        host=s.host,
        port=s.port,
        hostname=s.hostname,
        max_message_bytes=s.max_message_bytes,
        max_recipients=s.max_recipients,
        commit_timeout_s=s.commit_timeout_s,
        max_connections=s.max_connections,
        idle_timeout_s=s.idle_timeout_s,
        limits=SmtpLimits(
            max_junk_commands=s.max_junk_commands,
            max_errors=s.max_errors,
            max_connections_per_client=s.max_connections_per_client,
            max_session_s=s.max_session_s,
            max_data_bytes_in_flight=s.max_data_bytes_in_flight,
        ),
    )


def matrix_link(
    config: Config, store: Store, shared: SharedFiles | None = None
) -> MatrixLink | None:
    """The Matrix link in every room it serves, when `[matrix]` is configured; `shared`:
    where several nodes keep its crypto store (gateway.app.leases.leased_files)."""
    m = config.matrix
    if m is None:
        return None
    from adapters.matrix import MatrixLink  # noqa: PLC0415  (lazy, see the module doc)

    read = config.read_secret
    return MatrixLink(
        homeserver=m.homeserver,
        user_id=m.user_id,
        rooms=[
            m.incidents_room,
            *(r.room for r in m.report_rooms),
            *security_rooms(config),
            *(s.room for s in config.escalation if s.room),
            *alarm_rooms(config.alerts).rooms(),
        ],
        store=store,
        access_token=read(m.access_token) if m.access_token else None,
        password=read(m.password) if m.password else None,
        device_id=m.device_id,
        device_name=m.device_name,
        sync_timeout_s=m.sync_timeout_s,
        backoff_max_s=m.backoff_max_s,
        crypto=_matrix_crypto(config, shared),
        undecryptable_wait_s=m.undecryptable_wait_s,
    )


def _matrix_crypto(config: Config, shared: SharedFiles | None) -> MatrixCrypto | None:
    """End-to-end encryption for the Matrix link, when configured (docs/matrix-e2ee.md)."""
    m = config.matrix
    if m is None or m.encryption != "on" or m.pickle_key is None:
        return None
    from adapters.matrix_crypto import MatrixCrypto  # noqa: PLC0415  (lazy)
    from adapters.matrix_crypto_share import CryptoShare  # noqa: PLC0415  (lazy)

    store_dir = config.crypto_dir()
    return MatrixCrypto(
        store_dir=store_dir,
        share=CryptoShare(shared, store_dir) if shared is not None else None,
        pickle_key=config.read_secret(m.pickle_key),
        trust=m.trust,
        engineers=m.engineers,
        pinned=[PinnedDevice(d.user, d.device, d.ed25519) for d in m.trusted_devices],
    )


def imap_links(config: Config, clock: Clock, store: Store, intake: MailIntake) -> list[ImapIntake]:
    """One IMAP watcher per configured mailbox."""
    if not config.imap:
        return []
    from adapters.imap_intake import ImapIntake  # noqa: PLC0415  (lazy, see the module doc)

    return [
        ImapIntake(
            name=box.name,
            host=box.host,
            port=box.effective_port(),
            tls=box.tls,
            user=box.user,
            password=config.read_secret(box.password),
            mailbox=Mailbox(box.mailbox),
            sink=intake,
            kv=store,
            clock=clock,
            folder=box.folder,
            processed_folder=box.processed_folder,
            ca_file=config.imap_ca_file(box),
            idle_renew_s=box.idle_renew_s,
            poll_interval_s=box.poll_interval_s,
            timeout_s=box.timeout_s,
            backoff_max_s=box.backoff_max_s,
            auth_retry_s=box.auth_retry_s,
        )
        for box in config.imap
    ]


def alert_listener(
    config: Config, clock: Clock, intake: AlertIntake, service: Service
) -> AlertWebhookServer | None:
    """The alert and PagerDuty webhook listener, when `[alerts]` is configured (its
    state is in the health report as "alerts")."""
    a = config.alerts
    if a is None or not a.enabled:
        return None
    from adapters.alerts_http import (  # noqa: PLC0415  (lazy, see the module doc)
        AlertWebhookServer,
        SourceAuth,
    )
    from adapters.pagerduty_webhook import PagerDutyHook  # noqa: PLC0415
    from rules.alert_rules import AlertSource  # noqa: PLC0415

    read = config.read_secret
    sources = [
        SourceAuth(
            s.name,
            AlertSource(s.kind),
            s.auth,
            read(s.secret).encode(),
            s.hmac_header,
            s.rate_per_minute,
            s.hmac_timestamp_header,
            s.hmac_max_age_s,
        )
        for s in a.sources
    ]
    hook = config.pagerduty.webhook if config.pagerduty else None
    pd = (
        None
        if hook is None
        else PagerDutyHook(tuple(read(x).encode() for x in hook.secrets), hook.max_age_s)
    )
    server = AlertWebhookServer(
        intake,
        sources,
        host=a.host,
        port=a.port,
        max_body_bytes=a.max_body_bytes,
        rate_per_minute=a.rate_per_minute,
        commit_timeout_s=a.commit_timeout_s,
        pagerduty=pd,
        clock=clock,
    )
    service.add("alerts", partial(getattr, server, "state"))
    return server
