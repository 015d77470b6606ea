"""Delivery: the outbox worker (at least once, recorded exactly once), the handlers that turn
outbox entries into calls on the egress ports, external trackers' handlers, the timeline
lines each delivery leaves (worded here, recorded by the store), and dead letters."""
