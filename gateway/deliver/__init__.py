"""Delivery: the outbox worker (at least once, recorded exactly once), the handlers that turn
outbox entries into calls on the egress ports, external trackers' handlers, and dead
letters."""
