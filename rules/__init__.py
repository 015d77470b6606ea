"""Pure triage policy: a report and a clock in, a TriageDecision (with its reasons) out.

Nothing in this package does I/O, logs, or reads the clock itself.
"""
