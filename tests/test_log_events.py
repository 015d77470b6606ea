"""Every event the gateway logs itself has a stable `noun.verb` name, so operators can filter
on it (`jq 'select(.event == "outbox.dead_lettered")'`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
NOUN_VERB = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


def logged_events() -> list[tuple[str, int, str]]:
    """(file, line, event) for every logger call whose event is a string literal."""
    found = []
    for path in sorted([*ROOT.glob("gateway/**/*.py"), *ROOT.glob("adapters/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((str(path.relative_to(ROOT)), node.lineno, node.args[0].value))
    return found


def test_every_event_is_noun_verb() -> None:
    """No logger call in gateway/ or adapters/ uses a free-text event name."""
    events = logged_events()
    assert len(events) > 50
    assert [e for e in events if not NOUN_VERB.match(e[2])] == []
