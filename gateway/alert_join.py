"""How tenants' reports and monitoring alerts are recognised as the same problem.

Matching is by the rulebook's `[[component]]`s, never by free similarity: an alert concerns
the components whose labels or names it matches (rules.alerts.alert_components), and its
incident is flagged with them; a report concerns the components whose words its subject or
text names (rules.alerts.text_components). Then:
- a report from a trusted sender (on the trust allow-list, not shown forged) that names a
  component of an open alert incident joins it as a reporter; anyone else's report stays
  its own incident, so nobody becomes a reporter of an incident by naming a component;
- a firing alert group with no incident of its own joins the newest open tenant incident
  whose title names one of its components, unless that report is held as coming from an
  unverified sender (its reporter must not hear about the alert).
"""

from __future__ import annotations

from gateway.domain import Incident, PlanContext, Status
from gateway.trust import UNVERIFIED_FLAG
from rules.alerts import text_components
from rules.book import Rulebook

ALERT_FLAG = "alert"
COMPONENT_FLAG = "component:"


def flagged_components(incident: Incident) -> tuple[str, ...]:
    """The components an incident was flagged with."""
    return tuple(f.removeprefix(COMPONENT_FLAG) for f in incident.flags
                 if f.startswith(COMPONENT_FLAG))


def _live(incident: Incident) -> bool:
    return incident.status is not Status.RESOLVED and incident.merged_into is None


def report_for_alert(ctx: PlanContext, components: tuple[str, ...], book: Rulebook
                     ) -> Incident | None:
    """The newest open tenant incident whose title names one of `components`."""
    if not components:
        return None
    wanted = set(components)
    for incident in ctx.open_incidents():  # newest first
        # Never one held as "unverified sender": its reporter would hear about the alert.
        if (_live(incident) and ALERT_FLAG not in incident.flags
                and UNVERIFIED_FLAG not in incident.flags
                and wanted & set(text_components(incident.title, book))):
            return incident
    return None


def alert_for_report(ctx: PlanContext, text: str, trusted: bool, book: Rulebook
                     ) -> Incident | None:
    """The newest open alert incident about a component `text` names, for a trusted sender
    (on the allow-list and not shown forged)."""
    if not trusted or not book.alerts.join_reports or not book.components:
        return None
    named = set(text_components(text, book))
    if not named:
        return None
    for incident in ctx.open_incidents():
        if (_live(incident) and ALERT_FLAG in incident.flags
                and named & set(flagged_components(incident))):
            return incident
    return None
