"""Alarm rooms: alert incidents posted to the chat rooms a team watches by priority.

Like the `#high-priority-alarms` and `#low-priority-alarms` channels of the manual's other
team: each alert incident gets a root post in the room for its priority, and whatever its
alerts and PagerDuty do later is posted in that post's thread. The incident keeps its home
thread in the incidents room; engineers' commands work in both (in the alarm thread, or
naming the incident). Delivery is gateway.alarm_egress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config.alerts import AlertsConfig
from gateway.domain import Incident, OutboxKind, OutboxSpec
from rules.types import Priority

ROOM_FLAG = "alarm-room:"


@dataclass(frozen=True)
class AlarmRooms:
    """The room for each priority (priorities without a room are not posted)."""

    by_priority: Mapping[Priority, str] = field(default_factory=dict)

    def room_for(self, priority: Priority) -> str | None:
        """The alarm room of a priority."""
        return self.by_priority.get(priority)

    def rooms(self) -> frozenset[str]:
        """Every alarm room."""
        return frozenset(self.by_priority.values())


def alarm_rooms(config: AlertsConfig | None) -> AlarmRooms:
    """The configured alarm rooms, by priority."""
    if config is None:
        return AlarmRooms()
    rooms: dict[Priority, str] = {}
    for priority in Priority:
        room = (
            config.high_priority_room
            if priority.value in config.high_priorities
            else config.low_priority_room
        )
        if room is not None:
            rooms[priority] = room
    return AlarmRooms(rooms)


def root_post(room: str, body: str) -> OutboxSpec:
    """The post that roots an incident's thread in its alarm room."""
    return OutboxSpec(OutboxKind.CHAT_ALARM, {"room_id": room, "root": True, "body": body})


def thread_post(incident: Incident, body: str) -> tuple[OutboxSpec, ...]:
    """A post in the incident's alarm thread, if it has an alarm room."""
    room = next(
        (f.removeprefix(ROOM_FLAG) for f in incident.flags if f.startswith(ROOM_FLAG)), None
    )
    if room is None:
        return ()
    return (OutboxSpec(OutboxKind.CHAT_ALARM, {"room_id": room, "root": False, "body": body}),)
