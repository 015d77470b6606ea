"""Separating what a reporter just wrote from the history their mail client appended.

Owns `strip_quoted`: it cuts everything from the first sign of appended history on
("Original Message" separators in many languages, Outlook/Lotus/Yahoo header blocks,
forward markers, attribution lines followed by unquoted history, Zoho's dashed attribution,
the "-- " signature delimiter, mobile footers), then drops ">" quoted lines, "|" quoted
lines introduced by an attribution, and the attribution lines that introduce quotes, so
rules and incident updates see only the new text. The words it matches live in
`gateway.parse.mailquote_words`.

When unsure it keeps text: a cut needs strong evidence (an address, or a date and a time, in
an attribution; a From line with at least two more header labels under it), ">" lines beside
"<" lines are a pasted protocol trace, and if nothing would remain the whole text comes back.
Pure: text in, text out.
"""

from __future__ import annotations

import re

from gateway.parse import mailquote_words as words

_MAX_ATTRIBUTION_CHARS = 300
_MAX_ATTRIBUTION_LINES = 3
_BLOCK_SPAN = 6  # a header block's labels follow its From line within this many lines
# Separators, footers and From lines are short; longer lines are text (and never reach the
# patterns, which could backtrack for long on a hostile line of a megabyte).
_MAX_MARKER_CHARS = 400
_ADDRESS = re.compile(r"[^\s@<>()\[\]\"',;:]+@[\w-]+(?:\.[\w-]+)+")
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")
_TIME = re.compile(r"(?<!\d)\d{1,2}[:.h]\d\d(?!\d)")
# "… Name <addr>:" with nothing after the address but the colon (Gmail in many languages,
# Yandex, Mutt's "* Name <addr> [date]:").
# A bare address before the colon is a sentence ("… mail to billing@x.example:"), not this.
_ADDRESS_END = re.compile(r"(?:<[^<>\s]+@[^<>\s]+>|\([^\s()<>]+@[^\s()<>]+\))\s*[:：]\s*$")
_MUTT = re.compile(r"^\*\s.*<[^<>\s]+@[^<>\s]+>\s*\[[^\]]*\]\s*[:：]\s*$")
# A horizontal rule as mail clients and html2text ("* * *" for <hr>) write it.
_RULE = re.compile(r"[\s*_=~-]*")
# The response side of a pasted trace (curl -v, an SMTP session): its ">" lines are not quotes.
_TRACE_REPLY = re.compile(r"^\s*<\s")


def strip_quoted(text: str) -> str:
    """Return only the newly written part of `text`; the whole `text` if nothing would remain."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    colons = {i for i, line in enumerate(lines) if line.rstrip().endswith((":", "："))}
    lines = lines[: _hard_cut_index(lines, colons)]
    kept = _drop_quotes(lines, colons)
    while kept and _RULE.fullmatch(kept[-1]):  # blank lines and the rule above the history
        kept.pop()
    new = "\n".join(kept).strip("\n")
    return new if new.strip() else text


def _hard_cut_index(lines: list[str], colons: set[int]) -> int:
    """Index of the first line where appended history or a signature begins."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if _starts_history(stripped, lines, index):
            return index
        width, attribution = _attribution(lines, index, colons)
        if width and _history_is_unquoted(lines, index + width, attribution):
            return index
    return len(lines)


def _starts_history(stripped: str, lines: list[str], index: int) -> bool:
    """Whether this one line (with what follows it) opens history, a signature or a footer."""
    if not stripped or stripped.startswith(">") or len(stripped) > _MAX_MARKER_CHARS:
        return False
    if line_is_footer(stripped) or stripped in ("--", "-- ") or re.fullmatch(r"_{20,}", stripped):
        return True
    if words.SEPARATOR.match(stripped) or words.FORWARD.match(stripped):
        return True
    if (titled := words.DASHED_TITLE.match(stripped)) and (
        _strong(titled.group(1)) or _header_follows(lines, index + 1)
    ):
        return True
    labelled = words.FROM_LINE.match(stripped) or words.SENT_LINE.match(stripped)
    return bool(labelled) and (
        (words.FROM_LINE.match(stripped) is not None and _inline_block(stripped))
        or _is_header_block(lines[index : index + _BLOCK_SPAN + 1])
    )


def _inline_block(line: str) -> bool:
    """A From line that carries the date and the recipient or subject labels too."""
    sent = words.INLINE_SENT.search(line)
    return sent is not None and words.INLINE_TO.search(line, sent.end()) is not None


def line_is_footer(stripped: str) -> bool:
    """A mobile or app footer: "Sent from my iPhone", "Sendt fra min iPad", "iPhoneから送信"."""
    if words.FOOTER_CJK.match(stripped) or words.FOOTER_OUTLOOK.match(stripped):
        return True
    found = words.FOOTER.match(stripped)
    return found is not None and words.FOOTER_DEVICE.search(stripped) is not None


def _is_header_block(block: list[str]) -> bool:
    """Whether `block` (from its first line on) is a quoted header block: a From line and at
    least two more labels, one of them the date or the subject, the first line being one of
    them (Outlook starts with From, GMX with the date). "From: 17:02 / To: 17:40" written by
    a person stays."""
    roles = set()
    for line in block:
        for role, pattern in (
            ("from", words.FROM_LINE),
            ("sent", words.SENT_LINE),
            ("to", words.TO_LINE),
            ("subject", words.SUBJECT_LINE),
            ("cc", words.CC_LINE),
        ):
            if pattern.match(line):
                roles.add(role)
                break
    return "from" in roles and len(roles) >= 3 and bool(roles & {"sent", "subject"})


def _header_follows(lines: list[str], start: int) -> bool:
    """Whether one of the next three non-blank lines is a header label (From/Date/Subject)."""
    following = [line for line in lines[start : start + 6] if line.strip()][:3]
    return any(
        p.match(line)
        for line in following
        for p in (words.FROM_LINE, words.SENT_LINE, words.SUBJECT_LINE)
    )


def _strong(text: str) -> bool:
    """Evidence that a line names a message: an address, or both a date and a time."""
    return bool(_ADDRESS.search(text)) or bool(_YEAR.search(text) and _TIME.search(text))


def _weak(text: str) -> bool:
    """Some evidence that a line names a message: an address, a year or date, or a time."""
    return bool(_ADDRESS.search(text) or _YEAR.search(text) or _TIME.search(text))


def _attribution(lines: list[str], index: int, colons: set[int]) -> tuple[int, str]:
    """(number of lines, text) when an attribution, possibly wrapped over up to three lines,
    starts at `index`; (0, "") otherwise. `colons`: the indexes of lines ending in a colon."""
    first = lines[index].strip()
    if not first or first.startswith((">", "|")) or len(first) > _MAX_ATTRIBUTION_CHARS:
        return 0, ""
    if not any(i in colons for i in range(index, index + _MAX_ATTRIBUTION_LINES)):
        return 0, ""  # every attribution ends in a colon: most lines stop here, cheaply
    if _is_attribution(first, single=True):
        return 1, first
    if not _weak(first) and "<" not in first:
        return 0, ""  # a wrapped attribution shows its date or address on its first line
    joined = first
    for width in range(2, _MAX_ATTRIBUTION_LINES + 1):
        if index + width - 1 >= len(lines):
            break
        more = lines[index + width - 1].strip()
        if not more or more.startswith((">", "|")):
            break
        joined = f"{joined} {more}"
        if len(joined) > _MAX_ATTRIBUTION_CHARS:
            break
        if _is_attribution(joined, single=False):
            return width, joined
    return 0, ""


def _is_attribution(text: str, *, single: bool) -> bool:
    """An attribution line: ends in a verb of writing (and a colon), or in the quoted
    message's address after its date and time. A wrapped one needs a date, time or address."""
    text = text.rstrip()
    if not text.endswith((":", "：")):
        return False
    if words.VERB.search(text, max(0, len(text) - words.VERB_REACH)) or (
        words.CJK_VERB_END.search(text)
    ):
        return single or _weak(text)
    if _ADDRESS_END.search(text) or _MUTT.match(text):
        return bool(_YEAR.search(text) and _TIME.search(text))
    return False


def _history_is_unquoted(lines: list[str], after: int, attribution: str) -> bool:
    """Whether an attribution introduces unquoted history (cut it all) rather than quotes.

    A mere "X wrote:" followed by plain lines may be the reporter pasting a log, so it only
    counts with strong evidence: the quoted message's address, or its date and time.
    """
    if _introduces_quote(lines, after):
        return False
    return _strong(attribution)


def _drop_quotes(lines: list[str], colons: set[int]) -> list[str]:
    """Drop ">" lines (and "|" lines once an attribution introduced them) with the
    attribution lines that introduce them; keep interleaved replies and pasted traces."""
    traces = _trace_lines(lines)
    kept: list[str] = []
    pipes = dropped = False
    index = 0
    while index < len(lines):
        line = lines[index].lstrip()
        if (line.startswith(">") and index not in traces) or (pipes and line.startswith("|")):
            index += 1
            dropped = True
            continue
        if dropped and not line and kept and not kept[-1].strip():
            index += 1  # one blank line where a quote was between two answers
            continue
        width, _ = _attribution(lines, index, colons)
        if width and _introduces_quote(lines, index + width):
            pipes = pipes or _next_text(lines, index + width).startswith("|")
            index += width
            continue
        kept.append(lines[index])
        dropped = dropped and not line
        index += 1
    return kept


def _trace_lines(lines: list[str]) -> set[int]:
    """Indexes of lines in paragraphs that hold both ">" and "< " lines (curl -v, SMTP)."""
    found: set[int] = set()
    start = 0
    for end in [*(i for i, line in enumerate(lines) if not line.strip()), len(lines)]:
        block = range(start, end)
        if any(_TRACE_REPLY.match(lines[i]) for i in block) and any(
            lines[i].lstrip().startswith(">") for i in block
        ):
            found.update(block)
        start = end + 1
    return found


def _next_text(lines: list[str], after: int) -> str:
    """The next non-blank line from `after`, stripped of leading space ("" if none)."""
    return next((line.lstrip() for line in lines[after:] if line.strip()), "")


def _introduces_quote(lines: list[str], after: int) -> bool:
    """Whether the next non-blank line from `after` is quoted (">" or "|"), or nothing follows."""
    following = _next_text(lines, after)
    return not following or following.startswith((">", "|"))
