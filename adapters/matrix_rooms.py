"""The rooms the Matrix bot works in: joining the configured rooms (by ID, never by
invitation elsewhere), remembering those it could not join, and joining them again as soon
as it is invited or every JOIN_RETRY_S; what is missing is shown as "degraded".
"""

from __future__ import annotations

import asyncio

import structlog
from nio import AsyncClient, JoinError, SyncResponse

log = structlog.get_logger("adapters.matrix")

JOIN_RETRY_S = 60.0  # how often a configured room we are not in is tried again


class RoomJoiner:
    """Joins the configured rooms and keeps track of the ones the bot is not in."""

    def __init__(self, rooms: list[str]) -> None:
        self._rooms = rooms
        self.unjoined: dict[str, str] = {}  # configured rooms we are not in, and why
        self._retry_at = 0.0

    async def join(self, client: AsyncClient, rooms: list[str] | None = None) -> None:
        """Join the configured rooms (or those given); what cannot be joined is remembered,
        shown as "degraded", and joined again on an invitation or every JOIN_RETRY_S."""
        for room in self._rooms if rooms is None else rooms:
            resp = await client.join(room)
            if isinstance(resp, JoinError):
                if room not in self.unjoined:
                    log.error("matrix.join_failed", room_id=room, error=resp.status_code)
                self.unjoined[room] = str(resp.status_code or "join refused")
            elif room in self.unjoined:
                del self.unjoined[room]
                log.info("matrix.joined", room_id=room)
        self._retry_at = asyncio.get_running_loop().time() + JOIN_RETRY_S

    async def join_missing(self, client: AsyncClient, resp: SyncResponse) -> None:
        """Join a configured room we are not in as soon as we are invited (only configured
        rooms: an invitation elsewhere is ignored), else now and then."""
        if not self.unjoined:
            return
        invited = [room for room in resp.rooms.invite if room in self.unjoined]
        if invited:
            await self.join(client, invited)
        elif asyncio.get_running_loop().time() >= self._retry_at:
            await self.join(client, list(self.unjoined))

    def problem(self) -> str:
        """What is wrong while degraded: the configured rooms the bot is not in."""
        if not self.unjoined:
            return ""
        rooms = ", ".join(f"{room} ({why})" for room, why in sorted(self.unjoined.items()))
        return f"not in {rooms}: invite the bot"
