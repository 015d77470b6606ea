"""Re-sends over IMAP (issue 16 item 7): a different report under a reused Message-ID is
processed; the same message found again after a UIDVALIDITY change is processed once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import IN_HOURS, email_bytes, eventually, running, ticking
from tests.peers.dovecot import Dovecot
from tests.test_imap_intake import (
    box_of,
    deliver,
    idling,
    imap_config,
    incident_count,
    processed,
    unseen,
)

pytestmark = pytest.mark.peer


async def test_reused_message_id_with_other_content_is_processed_and_rescan_is_not(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """A decoy and the genuine report share sender and Message-ID: both are processed; after
    a UIDVALIDITY change both are found again and neither is processed a second time."""
    config = imap_config(tmp_path, dovecot, **{"mailbox": "emergency"})
    msgid = "<same-id@tenant.example>"
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        await deliver(dovecot, email_bytes(subject="Hello", body="Just a test", message_id=msgid))
        await deliver(dovecot, email_bytes(subject="Our site is down", message_id=msgid))
        await eventually(lambda: processed(tmp_path, 2))
    assert incident_count(tmp_path) == 2
    first = await asyncio.to_thread(dovecot.uids, "gw", "ALL")
    for uid in first:  # as if neither had been marked before a crash
        await asyncio.to_thread(
            dovecot.doveadm,
            "flags",
            "remove",
            "-u",
            "gw",
            r"\Seen",
            "mailbox",
            "INBOX",
            "uid",
            str(uid),
        )
    await asyncio.to_thread(dovecot.set_uidvalidity, "gw", 515151)
    async with running(config, clock=ticking(IN_HOURS)) as app:
        await eventually(lambda: idling(box_of(app)))
        await eventually(lambda: _all_seen(dovecot))
    assert processed(tmp_path, 2) and incident_count(tmp_path) == 2


async def _all_seen(dovecot: Dovecot) -> bool:
    return await unseen(dovecot) == []
