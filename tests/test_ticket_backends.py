"""The ticket backends against local fakes of Zendesk, Deskpro and GitHub that follow each
vendor's public API: create, reconcile, comment once, solve, and the error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from adapters.tickets_deskpro import DeskproTickets
from adapters.tickets_github import GitHubIssues
from adapters.tickets_zendesk import ZendeskTickets
from gateway.ports import NewTicket, PermanentError, TicketBackend, TransientError
from tests.fakes.deskpro import FakeDeskpro
from tests.fakes.github import FakeGitHub
from tests.fakes.http_base import FakeApi
from tests.fakes.zendesk import FakeZendesk

NOW = datetime.now(UTC)
TICKET = NewTicket(
    key="chatops-abc-1",
    title="[INC-1] Our site is down",
    body="Reported by alice@tenant.example.\n\nAll apps return 502.",
    requester="alice@tenant.example",
    priority="P1",
    since=NOW,
)


@dataclass
class Case:
    fake: FakeApi
    backend: TicketBackend
    tickets: Callable[[], list[dict[str, Any]]]
    notes: Callable[[str], list[str]]
    status: Callable[[str], str]
    secret: str


def _zendesk(fake: FakeZendesk, s: aiohttp.ClientSession, token: str = "zd-token") -> Case:
    return Case(
        fake,
        ZendeskTickets(fake.url, "agent@example.org", token, session=s),
        lambda: list(fake.tickets.values()),
        lambda tid: [c["body"] for c in fake.comments[int(tid)]],
        lambda tid: fake.tickets[int(tid)]["status"],
        token,
    )


def _deskpro(fake: FakeDeskpro, s: aiohttp.ClientSession, key: str = "1:dp-secret") -> Case:
    return Case(
        fake,
        DeskproTickets(fake.url, key, session=s, fallback_requester="support@example.org"),
        lambda: list(fake.tickets.values()),
        lambda tid: [m["message"] for m in fake.messages[int(tid)]],
        lambda tid: fake.tickets[int(tid)]["status"],
        key,
    )


def _github(fake: FakeGitHub, s: aiohttp.ClientSession, token: str = "gh-token") -> Case:
    return Case(
        fake,
        GitHubIssues(fake.repo, token, session=s, base_url=fake.url),
        lambda: list(fake.issues.values()),
        lambda n: [c["body"] for c in fake.comments[int(n)]],
        lambda n: fake.issues[int(n)]["state"],
        token,
    )


FAKES: dict[str, tuple[type[FakeApi], Any]] = {
    "zendesk": (FakeZendesk, _zendesk),
    "deskpro": (FakeDeskpro, _deskpro),
    "github": (FakeGitHub, _github),
}
SOLVED = {"zendesk": "solved", "deskpro": "resolved", "github": "closed"}


@asynccontextmanager
async def case(name: str, **credential: str) -> AsyncIterator[Case]:
    fake_type, make = FAKES[name]
    async with fake_type() as fake, aiohttp.ClientSession() as session:
        yield make(fake, session, **credential)


@pytest.fixture(params=sorted(FAKES))
def vendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_create_comment_solve(vendor: str) -> None:
    """A ticket is created with its title and text; a comment is added; solving closes it."""
    async with case(vendor) as c:
        handle = await c.backend.create(TICKET)
        [ticket] = c.tickets()
        assert handle.link and handle.external_id in handle.link
        assert "Our site is down" in str(ticket.get("subject", ticket.get("title")))
        await c.backend.comment(
            handle.external_id, "Update: the load balancer is back.", "abc-m7", NOW
        )
        assert any("load balancer is back" in n for n in c.notes(handle.external_id))
        await c.backend.update(handle.external_id, status="solved", title="[INC-1] LB failure")
        assert c.status(handle.external_id) == SOLVED[vendor]


async def test_create_again_finds_the_first_ticket(vendor: str) -> None:
    """A create repeated with the same key (a crash before our commit) opens no second ticket."""
    async with case(vendor) as c:
        first = await c.backend.create(TICKET)
        again = await c.backend.create(TICKET)
        assert again == first and len(c.tickets()) == 1


async def test_comment_repeated_is_added_once(vendor: str) -> None:
    """The same comment key posted twice leaves one comment."""
    async with case(vendor) as c:
        handle = await c.backend.create(TICKET)
        for _ in range(2):
            await c.backend.comment(handle.external_id, "Note by @eng: checking", "abc-m9", NOW)
        assert sum("checking" in n for n in c.notes(handle.external_id)) == 1


async def test_rate_limit_is_transient_with_retry_after(vendor: str) -> None:
    """429 with Retry-After becomes a TransientError carrying the hint; nothing is created."""
    async with case(vendor) as c:
        c.fake.fail_next(429, headers={"Retry-After": "7"})
        with pytest.raises(TransientError) as caught:
            await c.backend.create(TICKET)
        assert caught.value.retry_after_s == 7.0 and c.tickets() == []


async def test_server_error_is_transient(vendor: str) -> None:
    """A 503 is worth retrying."""
    async with case(vendor) as c:
        c.fake.fail_next(503)
        with pytest.raises(TransientError):
            await c.backend.create(TICKET)
        await c.backend.create(TICKET)
        assert len(c.tickets()) == 1


async def test_bad_credentials_are_permanent_and_not_quoted(vendor: str) -> None:
    """A refused credential is a PermanentError whose text does not contain it."""
    async with case(vendor, **{_cred(vendor): "wrong-secret-123"}) as c:
        with pytest.raises(PermanentError) as caught:
            await c.backend.create(TICKET)
        assert "wrong-secret-123" not in str(caught.value)


def _cred(vendor: str) -> str:
    return {"zendesk": "token", "deskpro": "key", "github": "token"}[vendor]


async def test_zendesk_sends_idempotency_key_and_external_id() -> None:
    """Zendesk's create carries the key as Idempotency-Key and external_id; the first comment
    is private, so the requester is not emailed by the ticket."""
    async with case("zendesk") as c:
        await c.backend.create(TICKET)
        assert isinstance(c.fake, FakeZendesk)
        [ticket] = c.tickets()
        assert ticket["external_id"] == TICKET.key and ticket["priority"] == "urgent"
        assert c.fake.public_comments(ticket["id"]) == []
        assert TICKET.key in c.fake._idempotency


async def test_zendesk_solving_assigns_the_agent() -> None:
    """Zendesk refuses to solve an unassigned ticket: the agent is assigned when solving."""
    async with case("zendesk") as c:
        handle = await c.backend.create(TICKET)
        await c.backend.update(handle.external_id, status="solved")
        assert c.status(handle.external_id) == "solved"


async def test_github_rate_limit_403_waits_for_reset() -> None:
    """GitHub's 403 with x-ratelimit-remaining: 0 is transient until x-ratelimit-reset."""
    async with case("github") as c:
        reset = int((datetime.now(UTC) + timedelta(seconds=120)).timestamp())
        c.fake.fail_next(
            403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
        )
        with pytest.raises(TransientError) as caught:
            await c.backend.create(TICKET)
        assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 60


async def test_github_reconcile_follows_pagination() -> None:
    """Our issue is found on a later page of the label listing, not created again."""
    async with case("github") as c:
        first = await c.backend.create(TICKET)
        for n in range(40):  # newer issues push ours to the second page
            await c.backend.create(NewTicket(f"k-{n}", f"other {n}", "x", "a@b.example", "P4"))
        again = await c.backend.create(TICKET)
        assert again == first and len(c.tickets()) == 41
        assert c.fake.count("GET", "/repos") >= 2 + 40


async def test_deskpro_comment_check_reads_every_page() -> None:
    """A note already on the ticket's second page of messages is not posted again."""
    async with case("deskpro") as c:
        handle = await c.backend.create(TICKET)
        assert isinstance(c.fake, FakeDeskpro)
        c.fake.messages[int(handle.external_id)] += [
            {"id": n, "message": f"filler {n}", "is_agent_note": True} for n in range(2, 122)
        ]
        for _ in range(2):
            await c.backend.comment(handle.external_id, "Marked note", "abc-m1", NOW)
        assert sum("Marked note" in n for n in c.notes(handle.external_id)) == 1
