"""Quote stripping: how often each stripper gives engineers exactly what the reporter wrote.

What it measures: on the labelled set in tests/fixtures/replies/ (replies from Outlook in
eleven languages, Gmail in ten, Apple Mail, Thunderbird, Evolution, Roundcube, Mutt, iOS
and Android mail, Samsung Email, BlackBerry, Zoho, Yahoo, Yandex, Lotus Notes, HTML-only
replies, and reports that only look like history), for each stripper:

- exact: the output is the expected new text (trailing spaces and blank edge lines aside);
- contains-all: every line of the expected text is in the output (nothing lost);
- no-quote-leaked: of the cases that name history strings, the share where none got through;
- µs/reply: mean time per reply over `--repeat` passes (after one warm-up pass).

Strippers: `gateway.parse.mailquote.strip_quoted` (ours); `mail-parser-reply` with every language
it ships (`latest_reply`, and `replies[0].body`, which also drops what it takes for a
signature); `quotequail.quote(..., quote_intro_line=True)` keeping the parts it expands;
`talon.quotations.extract_from_plain`.
A library that is not installed is reported as such. `--baseline FILE` also scores the
`strip_quoted` of another copy of gateway/parse/mailquote.py (e.g. an older version), in the
same run.

Run from the repository root, with the project's virtualenv (the libraries are only needed
for the comparison: `.venv/bin/pip install mail-parser-reply quotequail talon`):

    .venv/bin/python bench/quote_strip.py
    .venv/bin/python bench/quote_strip.py --failures      # also list the cases each one misses
    .venv/bin/python bench/quote_strip.py --baseline /tmp/mailquote_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.parse.mailquote import strip_quoted
from tests.reply_set import Case, load_cases, rates, score

Stripper = Callable[[str], str]


def _mail_parser_reply(body: bool) -> Stripper | None:
    try:
        # optional: installed only to compare
        from mailparser_reply import EmailReplyParser  # noqa: PLC0415
        from mailparser_reply.constants import MAIL_LANGUAGES  # noqa: PLC0415
    except ImportError:
        return None
    parser = EmailReplyParser(languages=list(MAIL_LANGUAGES))

    def strip(text: str) -> str:
        message = parser.read(text)
        if not message.replies:
            return ""
        return str(message.replies[0].body if body else message.replies[0].content)

    return strip


def _quotequail() -> Stripper | None:
    try:
        import quotequail  # noqa: PLC0415  (optional: installed only to compare)
    except ImportError:
        return None

    def strip(text: str) -> str:
        return "\n".join(
            part for expand, part in quotequail.quote(text, quote_intro_line=True) if expand
        )

    return strip


def _talon() -> Stripper | None:
    try:
        from talon import quotations  # noqa: PLC0415  (optional: installed only to compare)
    except ImportError:
        return None

    def strip(text: str) -> str:
        return str(quotations.extract_from_plain(text))

    return strip


def _from_file(path: str) -> Stripper:
    spec = importlib.util.spec_from_file_location("baseline_mailquote", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.strip_quoted  # type: ignore[no-any-return]


def _timed(cases: list[Case], strip: Stripper, repeat: int) -> float:
    for case in cases:
        strip(case.text)
    start = time.perf_counter_ns()
    for _ in range(repeat):
        for case in cases:
            strip(case.text)
    return (time.perf_counter_ns() - start) / 1000 / repeat / len(cases)


def main() -> int:
    """Print one row per stripper."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--failures", action="store_true", help="list the cases missed")
    parser.add_argument("--baseline", help="another mailquote.py whose strip_quoted to score")
    args = parser.parse_args()
    cases = load_cases()
    strippers: dict[str, Stripper | None] = {"ours (gateway.parse.mailquote)": strip_quoted}
    if args.baseline:
        strippers[f"baseline ({Path(args.baseline).name})"] = _from_file(args.baseline)
    strippers["mail-parser-reply latest_reply"] = _mail_parser_reply(body=False)
    strippers["mail-parser-reply body"] = _mail_parser_reply(body=True)
    strippers["quotequail"] = _quotequail()
    strippers["talon quotations.extract_from_plain"] = _talon()
    marked = sum(1 for case in cases if case.leaks)
    print(f"{len(cases)} replies, {marked} with history strings that must not leak")
    print(
        f"{'stripper':36} {'exact':>7} {'contains-all':>13} {'no-quote-leaked':>16} {'µs/reply':>9}"
    )
    for name, strip in strippers.items():
        if strip is None:
            print(f"{name:36} not installed")
            continue
        r = rates(cases, strip)
        print(
            f"{name:36} {r['exact']:7.1%} {r['contains_all']:13.1%} {r['no_leak']:16.1%} "
            f"{_timed(cases, strip, args.repeat):9.1f}"
        )
        if args.failures:
            for case in cases:
                s = score(case, strip(case.text))
                if not s.exact:
                    print(f"    {case.id}: contains-all={s.contains_all} no-leak={s.no_leak}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
