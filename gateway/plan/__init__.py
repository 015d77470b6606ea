"""Pure planning: an accepted message (or a command, or the clock), its thread and `now` in;
a Plan out. Threading, triage outcomes, storm and loop decisions, sender trust, thread
tokens, the wording sent to people, SLA reminders, mirrors and reports.

No I/O: this package imports neither the store nor asyncio nor sqlite3 (an import-linter
contract keeps it so). The store applies the Plans; the outbox delivers what they ask for."""
