"""The labelled set of replies (tests/fixtures/replies/*.toml) and how a stripper is scored.

Each case is a reply body as a mail client sent it (`reply`, or `html` converted the way the
gateway converts an HTML-only part), the text an engineer should see (`expected`), and the
strings of quoted history that must never reach an engineer (`leaks`).

Scores, per case:
- exact: the stripper's output equals `expected` (trailing spaces and blank lines at either
  end aside);
- contains-all: every non-blank line of `expected` is in the output (nothing the reporter
  wrote was lost, whatever else came along);
- no-quote-leaked: none of `leaks` is in the output.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.parse.mail import html_to_text

FIXTURES = Path(__file__).parent / "fixtures" / "replies"


@dataclass(frozen=True)
class Case:
    """One labelled reply."""

    id: str
    client: str
    text: str
    expected: str
    leaks: tuple[str, ...]


@dataclass(frozen=True)
class Score:
    """How one stripper did on one case."""

    exact: bool
    contains_all: bool
    no_leak: bool


def load_cases(folder: Path = FIXTURES) -> list[Case]:
    """Every case in every TOML file of `folder`, in file then case order."""
    cases = []
    for path in sorted(folder.glob("*.toml")):
        for raw in tomllib.loads(path.read_text(encoding="utf-8"))["case"]:
            text = html_to_text(raw["html"]) if "html" in raw else raw["reply"]
            cases.append(
                Case(raw["id"], raw["client"], text, raw["expected"], tuple(raw.get("leaks", ())))
            )
    return cases


def normalise(text: str) -> str:
    """Line ends unified, trailing spaces and blank lines at either end dropped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def score(case: Case, output: str) -> Score:
    """Score one output against its case."""
    out = normalise(output)
    present = {line.strip() for line in out.split("\n")}
    wanted = [line.strip() for line in normalise(case.expected).split("\n") if line.strip()]
    return Score(
        exact=out == normalise(case.expected),
        contains_all=all(line in present for line in wanted),
        no_leak=not any(leak in out for leak in case.leaks),
    )


def rates(cases: Iterable[Case], strip: Callable[[str], str]) -> dict[str, float]:
    """The share of cases exact, containing all, and (of those with leaks) with none leaked."""
    scored = [(case, score(case, strip(case.text))) for case in cases]
    marked = [s for case, s in scored if case.leaks]
    return {
        "exact": sum(s.exact for _, s in scored) / len(scored),
        "contains_all": sum(s.contains_all for _, s in scored) / len(scored),
        "no_leak": sum(s.no_leak for s in marked) / len(marked) if marked else 1.0,
    }
