"""IMAP intake through aioimaplib: one supervised connection per configured mailbox folder.

Per connection: connect (implicit TLS, STARTTLS, or plain text on loopback), LOGIN, SELECT,
then repeat: scan what is new (gateway.plan.imapsync decides which UIDs), fetch it with
BODY.PEEK[] (so nothing is marked read by the fetch), commit it to the durable inbox, mark it
\\Seen (or move it to the processed folder), and only then persist the cursor; then wait with
IDLE (re-issued every `idle_renew_s`) or, without IDLE, poll.

aioimaplib leaves some commands unbounded (IDLE, STORE, MOVE) and never fails a pending
command when the connection drops, so every command here races a timeout and the
connection-lost signal. BYE, loss and timeouts reconnect with capped exponential backoff;
refused credentials park the intake in "bad_credentials" instead of hammering the server.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

import structlog
from aioimaplib import AioImapException, Command, Response

from adapters.imap_wire import (
    EXISTS,
    Client,
    WatchingProtocol,
    astring,
    drop,
    parse_fetch,
    parse_search,
    parse_select,
)
from gateway.domain import Accepted
from gateway.plan.imapsync import Cursor, chunks, cursor_key, envelope_sender, plan_scan, uid_set
from gateway.ports import KeyValue, TransientError
from gateway.run.supervise import backoff_s
from rules.types import Mailbox

log = structlog.get_logger("adapters.imap_intake")

T = TypeVar("T")
FETCH_BATCH = 50


class Sink(Protocol):
    """Where fetched messages go (the core's MailIntake)."""

    async def accept_fetched(self, mailbox: Mailbox, mail_from: str, raw: bytes) -> Accepted: ...
    def wake(self) -> None: ...


class BadCredentials(Exception):
    """The server refused our user name or password."""


class ConnectionLost(Exception):
    """The server hung up (BYE, reset) or stopped answering."""


class ImapIntake:
    """Watches one folder of one mailbox and feeds what arrives to the durable inbox."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        tls: str,
        user: str,
        password: str,
        mailbox: Mailbox,
        sink: Sink,
        kv: KeyValue,
        clock: Callable[[], datetime],
        folder: str = "INBOX",
        processed_folder: str | None = None,
        ca_file: Path | None = None,
        idle_renew_s: float = 600.0,
        poll_interval_s: float = 60.0,
        timeout_s: float = 60.0,
        backoff_max_s: float = 60.0,
        auth_retry_s: float = 300.0,
    ) -> None:
        self.name = name
        self.state = "starting"
        self.logins = 0  # LOGIN attempts, for the health check and tests
        self.connected = asyncio.Event()
        self._host, self._port, self._tls = host, port, tls
        self._user, self._password = user, password
        self._mailbox, self._sink, self._kv, self._clock = mailbox, sink, kv, clock
        self._folder, self._processed = folder, processed_folder
        self._ca_file = ca_file
        self._idle_renew_s, self._poll_s = idle_renew_s, poll_interval_s
        self._timeout_s, self._backoff_max_s = timeout_s, backoff_max_s
        self._auth_retry_s = auth_retry_s
        self._key = cursor_key(name, folder)
        self._client: Client | None = None
        self._lost = asyncio.Event()

    def __repr__(self) -> str:
        return f"ImapIntake({self.name!r}, {self._user!r} on {self._host!r}, state={self.state!r})"

    # -- supervision ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and process until cancelled, reconnecting with capped backoff."""
        failures = 0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                if _being_cancelled():
                    raise
                # A CancelledError nobody asked for (a library cancelled one of its futures):
                # a lost connection, never a reason to stop watching the mailbox.
                self._down("backing_off")
                delay = min(self._backoff_max_s, 1.0)
                log.error("imap.stray_cancellation", mailbox=self.name, delay_s=delay)
            except BadCredentials:
                self._down("bad_credentials")
                log.error("imap.bad_credentials", mailbox=self.name, retry_s=self._auth_retry_s)
                delay = self._auth_retry_s
            except (ConnectionLost, TransientError, AioImapException, TimeoutError, OSError) as exc:
                failures = 0 if self.connected.is_set() else failures + 1
                self._down("backing_off")
                delay = backoff_s(failures, 0.25, self._backoff_max_s, max_doublings=10)
                log.warning(
                    "imap.backing_off",
                    mailbox=self.name,
                    error=_reason(exc),
                    delay_s=round(delay, 2),
                )
            except Exception:
                # A bug here must not take the daemon down: report it, back off, retry.
                failures += 1
                self._down("backing_off")
                delay = self._backoff_max_s
                log.exception("imap.crashed", mailbox=self.name, delay_s=delay)
            await asyncio.sleep(delay)

    def _down(self, state: str) -> None:
        self.state = state
        self.connected.clear()

    async def close(self) -> None:
        """Log out if still connected (bounded) and drop the connection."""
        client, self._client = self._client, None
        if client is None:
            return
        if not self._lost.is_set() and client.protocol.state in ("AUTH", "SELECTED"):
            try:
                async with asyncio.timeout(min(self._timeout_s, 2.0)):
                    await client.protocol.logout()
            except asyncio.CancelledError:
                drop(client)
                raise
            except Exception:  # noqa: S110  # best effort: the connection is dropped next
                pass
        drop(client)

    async def _session(self) -> None:
        try:
            client = await self._connect()
            uidvalidity, uidnext = await self._select(client)
            self.state = "connected"
            self.connected.set()
            log.info(
                "imap.connected",
                mailbox=self.name,
                folder=self._folder,
                idle=client.has_capability("IDLE"),
            )
            while True:
                client.protocol.new_mail = False
                await self._scan(client, uidvalidity, uidnext)
                uidnext = None
                if not client.protocol.new_mail:  # nothing arrived while we were scanning
                    await self._wait(client)
        finally:
            client_, self._client = self._client, None
            if client_ is not None:
                drop(client_)

    # -- commands ------------------------------------------------------------------------------
    async def _call(self, aw: Awaitable[T]) -> T:
        """One command, bounded by the timeout and by the connection's loss."""
        task = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self._lost.wait())
        answered = False
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
            answered = task.done()
        finally:
            for pending in (task, lost):
                if not pending.done():
                    pending.cancel()
        # Judge by what happened before the cancelling above: a plain future (such as
        # `asyncio.shield`'s outer one) counts as done once cancelled, and its result() then
        # raises CancelledError, which would read as our own shutdown. A command the library
        # cancelled (its connection went away) is a lost connection as well.
        if not answered or task.cancelled():
            raise ConnectionLost("connection lost")
        return task.result()

    async def _ok(self, aw: Awaitable[Response], what: str) -> Response:
        resp = await self._call(aw)
        if resp.result != "OK":
            raise TransientError(f"{what} answered {resp.result}")
        return resp

    async def _connect(self) -> Client:
        self._lost = lost = asyncio.Event()
        context = None
        if self._tls != "none":
            context = ssl.create_default_context(
                cafile=str(self._ca_file) if self._ca_file else None
            )
        client = Client(
            host=self._host,
            port=self._port,
            timeout=self._timeout_s,
            conn_lost_cb=lambda _exc: lost.set(),
            ssl_context=context if self._tls == "implicit" else None,
        )
        self._client = client
        await self._call(client.wait_hello_from_server())
        if self._tls == "starttls":
            if context is None:
                raise RuntimeError("context is set here")
            await self._starttls(client, context)
        self.logins += 1
        resp = await self._call(client.protocol.login(self._user, self._password))
        if resp.result != "OK":
            text = b" ".join(line for line in resp.lines if isinstance(line, bytes))
            if b"[UNAVAILABLE]" in text or b"[INUSE]" in text:
                raise TransientError("the server cannot log us in now")
            raise BadCredentials()
        if not client.has_capability("IDLE") or "UIDPLUS" not in client.protocol.capabilities:
            await self._call(client.protocol.capability())  # some servers send them after LOGIN
        return client

    async def _starttls(self, client: Client, context: ssl.SSLContext) -> None:
        # aioimaplib knows the STARTTLS command but has no helper: upgrade its transport.
        proto = client.protocol
        if not client.has_capability("STARTTLS"):
            raise TransientError("the server does not offer STARTTLS (refusing plain text)")
        await self._ok(
            proto.execute(Command("STARTTLS", proto.new_tag(), loop=proto.loop)), "STARTTLS"
        )
        loop = asyncio.get_running_loop()
        proto.transport = await self._call(
            loop.start_tls(proto.transport, proto, context, server_hostname=self._host)
        )
        await self._call(proto.capability())  # capabilities from before TLS are not trusted

    async def _select(self, client: Client) -> tuple[int, int | None]:
        if self._processed is not None:
            # Made once; "already exists" is a NO we ignore.
            await self._call(client.protocol.simple_command("CREATE", astring(self._processed)))
        resp = await self._ok(client.protocol.select(astring(self._folder)), "SELECT")
        return parse_select(resp)

    # -- processing ----------------------------------------------------------------------------
    async def _scan(self, client: Client, uidvalidity: int, uidnext: int | None) -> None:
        proto = client.protocol
        stored = Cursor.loads(await _stored(self._kv.kv_get(self._key)))
        plan = plan_scan(stored, uidvalidity)
        resp = await self._ok(proto.search(plan.criteria, charset=None, by_uid=True), "SEARCH")
        uids = plan.new(parse_search(resp))
        if plan.reason == "new":
            if stored is None:
                raise RuntimeError("stored is set here")
            cursor = stored
        else:
            log.info("imap.rescan", mailbox=self.name, reason=plan.reason, messages=len(uids))
            if uidnext is None:
                everything = await self._ok(
                    proto.search("ALL", charset=None, by_uid=True), "SEARCH"
                )
                uidnext = max(parse_search(everything), default=0) + 1
            # Below UIDNEXT everything is either in this scan or not wanted: once the scan is
            # done the cursor starts there. Until then it is not stored (a crash re-scans).
            cursor = Cursor(uidvalidity, uidnext - 1, self._clock())
        for batch in chunks(uids, FETCH_BATCH):
            cursor = await self._process(client, cursor, batch, store=plan.reason == "new")
        if plan.reason != "new":
            await _stored(self._kv.kv_set(self._key, cursor.dumps()))

    async def _process(
        self, client: Client, cursor: Cursor, batch: list[int], *, store: bool
    ) -> Cursor:
        resp = await self._ok(
            client.protocol.fetch(uid_set(batch), "(UID BODY.PEEK[])", by_uid=True), "FETCH"
        )
        wanted = set(batch)
        messages = [(uid, raw) for uid, raw in parse_fetch(resp) if uid in wanted]
        if len(messages) != len(batch):
            log.warning(
                "imap.fetch_short", mailbox=self.name, asked=len(batch), got=len(messages)
            )  # expunged meanwhile
        if not messages:
            return cursor
        try:
            results = await asyncio.gather(
                *(
                    self._sink.accept_fetched(self._mailbox, envelope_sender(raw), raw)
                    for _, raw in messages
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise TransientError(f"could not commit fetched mail ({type(exc).__name__})") from exc
        self._sink.wake()
        done = [uid for uid, _ in messages]
        await self._mark(client, done)
        for (uid, raw), accepted in zip(messages, results, strict=True):
            log.info(
                "inbox.accepted",
                inbox_id=accepted.inbox_id,
                duplicate=accepted.duplicate,
                size=len(raw),
                imap=self.name,
                uid=uid,
            )
        cursor = cursor.advanced(done, self._clock())
        if store:
            await _stored(self._kv.kv_set(self._key, cursor.dumps()))
        return cursor

    async def _mark(self, client: Client, uids: list[int]) -> None:
        proto, which = client.protocol, uid_set(uids)
        if self._processed is None:
            await self._ok(proto.store(which, "+FLAGS.SILENT", r"(\Seen)", by_uid=True), "STORE")
        elif client.has_capability("MOVE"):
            await self._ok(proto.move(which, astring(self._processed), by_uid=True), "MOVE")
        else:
            await self._ok(proto.copy(which, astring(self._processed), by_uid=True), "COPY")
            await self._ok(
                proto.store(which, "+FLAGS.SILENT", r"(\Seen \Deleted)", by_uid=True), "STORE"
            )
            if "UIDPLUS" in proto.capabilities:
                await self._ok(proto.expunge(which, by_uid=True), "EXPUNGE")

    # -- waiting -------------------------------------------------------------------------------
    async def _wait(self, client: Client) -> None:
        if not client.has_capability("IDLE"):
            await asyncio.sleep(self._poll_s)
            await self._ok(client.protocol.simple_command("NOOP"), "NOOP")
            return
        proto = client.protocol
        while not proto.idle_queue.empty():  # pushes from an earlier IDLE: a scan just ran
            proto.idle_queue.get_nowait()
        idle = await self._call(client.idle_start(timeout=self._idle_renew_s + self._timeout_s))
        try:
            await self._idle_until_news(proto)
        finally:
            if not self._lost.is_set() and not idle.done():
                client.idle_done()
                await self._call(asyncio.shield(idle))
            elif not idle.done():
                idle.cancel()

    async def _idle_until_news(self, proto: WatchingProtocol) -> None:
        """Until new mail, the renewal time (29-minute rule; NATs drop idle flows sooner),
        BYE or loss. "OK Still here" and flag or expunge pushes keep us idling."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_renew_s
        while (remaining := deadline - loop.time()) > 0:
            get = asyncio.ensure_future(proto.idle_queue.get())
            lost = asyncio.ensure_future(self._lost.wait())
            done, _ = await asyncio.wait(
                {get, lost}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for task in (get, lost):
                if not task.done():
                    task.cancel()
            if get not in done:
                if lost in done:
                    raise ConnectionLost("connection lost while idling")
                return  # time to renew
            lines = get.result()
            if any(isinstance(line, bytes) and line.startswith(b"BYE") for line in lines):
                raise ConnectionLost("the server said BYE")
            if any(isinstance(line, bytes) and EXISTS.match(line) for line in lines):
                return
            if lines == [b"stop_wait_server_push"]:
                return


async def _stored(aw: Awaitable[T]) -> T:
    """A read or write of the saved position: a state store that does not answer (a
    database down) is a reason to back off and retry, like a server that does not."""
    try:
        return await aw
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise TransientError(f"the state store did not answer ({type(exc).__name__})") from exc


def _being_cancelled() -> bool:
    """Whether the running task itself was asked to stop (versus a stray CancelledError)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TransientError):
        return exc.reason
    if isinstance(exc, ConnectionLost):
        return str(exc)
    return type(exc).__name__
