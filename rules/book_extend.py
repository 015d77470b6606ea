"""Extending the packaged rulebook: a file that says `extends = "default"` gives only what
differs (targets, hours, a rule or two) and this module merges it over the default's data,
before validation. Pure: parsed TOML in, parsed TOML out.
"""

from __future__ import annotations

from typing import Any

EXTENDABLE = ("default",)


def extend(base: dict[str, Any], changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The packaged rulebook (`base`, as parsed TOML) with a file's changes applied.

    - `[hours]`, `[priority.Pn]` and `[mailbox.<name>]` merge key by key, and a key given
      replaces the default's value whole: `respond = { minutes = 15 }` drops the default's
      out_of_hours_minutes (a target is one promise, not a mix of two), and a
      `[hours.bank_holidays]` table replaces the default's calendar whole;
    - a `[[rule]]` whose id is a default rule's replaces it in place; others are added after
      the defaults; `drop_rules = ["id", ...]` removes default rules;
    - any other top-level table replaces the default's.
    Returns the merged data and the problems (an unknown base, a dropped id the default
    does not have), each as "path: message"; with problems, the data is `base` unchanged.
    """
    changes = dict(changes)
    name = changes.pop("extends", None)
    drop = changes.pop("drop_rules", [])
    problems = []
    if name not in EXTENDABLE:
        problems.append(
            f'extends: only "default" can be extended, got {name!r}'
            if name is not None
            else 'drop_rules: needs extends = "default"'
        )
    rules = [r for r in base.get("rule", []) if isinstance(r, dict)]
    known = {r.get("id") for r in rules}
    if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
        problems.append("drop_rules: a list of rule ids")
        drop = []
    problems += [
        f"drop_rules: the default rulebook has no rule {d!r}" for d in drop if d not in known
    ]
    if problems:
        return base, problems
    merged = dict(base)
    for key, value in changes.items():
        if key == "hours" and isinstance(value, dict):
            merged[key] = {**base.get(key, {}), **value}
        elif key in ("priority", "mailbox") and isinstance(value, dict):
            merged[key] = {
                **base.get(key, {}),
                **{
                    level: {**base.get(key, {}).get(level, {}), **table}
                    if isinstance(table, dict)
                    else table
                    for level, table in value.items()
                },
            }
        elif key == "rule" and isinstance(value, list):
            merged[key] = _merge_rules(rules, value)
        else:
            merged[key] = value
    if drop:
        merged["rule"] = [r for r in merged.get("rule", rules) if r.get("id") not in drop]
    return merged, []


def _merge_rules(base: list[dict[str, Any]], changes: list[Any]) -> list[Any]:
    """Default rules with same-id replacements in place, then the new ones in file order."""
    by_id = {r.get("id"): r for r in changes if isinstance(r, dict) and "id" in r}
    replaced = [by_id.get(r.get("id"), r) for r in base]
    base_ids = {r.get("id") for r in base}
    return replaced + [r for r in changes if not (isinstance(r, dict) and r.get("id") in base_ids)]
