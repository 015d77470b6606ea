"""Separating what a reporter just wrote from the history their mail client appended.

Owns `strip_quoted`: it cuts Outlook "Original Message" blocks and header blocks,
forwarded-message markers, signatures and mobile footers, and drops ">" quoted lines and
the "On ... wrote:" attribution lines that introduce them, so rules and incident updates
see only the new text. Pure: text in, text out.
"""

from __future__ import annotations

import re

# Attribution lines that introduce a quote, in the languages reporters most often use.
# These are matched against one line, or two lines joined, because clients wrap long
# ones ("On Mon, 1 Jan 2024 at 10:00, Bob Smith <\nbob@example.com> wrote:").
_ATTRIBUTION = re.compile(
    r"""^(?:
        on\s.+\swrote\s?:                       # English (Gmail, Apple Mail, Thunderbird)
      | le\s.+\sa\s[ée]crit\s?:                 # French
      | am\s.+\sschrieb.*:                      # German ("Am ... schrieb Bob <b@x>:")
      | el\s.+\sescribi[óo]\s?:                 # Spanish
      | il\s.+\sha\sscritto\s?:                 # Italian
      | op\s.+\sschreef.*:                      # Dutch
      | em\s.+\sescreveu\s?:                    # Portuguese
      | den\s.+\sskrev.*:                       # Swedish, Danish, Norwegian
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
# "Bob Smith <bob@example.com> wrote:" has no leading keyword, so only ever one line:
# joined to the line before, it would swallow any sentence.
_NAMED_ATTRIBUTION = re.compile(r"^.+\swrote\s?:\s*$", re.IGNORECASE)
_MAX_ATTRIBUTION_CHARS = 300
_ATTRIBUTION_EVIDENCE = re.compile(r"@|\b(?:19|20)\d\d\b|\b\d{1,2}:\d\d\b")

# Lines after which everything is history or signature: Outlook and Thunderbird
# separators, forwarded-message markers, the RFC 3676 signature delimiter ("-- ",
# often sent as "--" by clients that trim trailing spaces), and mobile footers.
_HARD_CUT = re.compile(
    r"""^(?:
        -{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine
                  |mensaje\s+original|forwarded\s+message|weitergeleitete\s+nachricht
                  |message\s+transféré)\s*-{2,}
      | _{20,}
      | begin\s+forwarded\s+message\s*:
      | --\s?
      | sent\s+from\s+my\s+\w[\w\s.'-]{0,40}
      | sent\s+from\s+(?:outlook|mail|yahoo\s+mail|aol\s+mobile\s+mail)\b.{0,40}
      | get\s+outlook\s+for\s+\w+
      | von\s+meinem\s+\w[\w\s.-]{0,40}\s+gesendet
      | envoy[ée]\s+de\s+mon\s+\w[\w\s.-]{0,40}
    )$""",
    re.IGNORECASE | re.VERBOSE,
)

# An Outlook header block: "From:" followed within a few lines by "Sent:"/"Date:" and
# "To:"/"Subject:". Clients that convert HTML wrap the labels in "*" or "**".
_BLOCK_FROM = re.compile(r"^\**(?:from|von|de)\s?:\**\s", re.IGNORECASE)
_BLOCK_SENT = re.compile(r"^\**(?:sent|date|gesendet|datum|envoy[ée])\s?:\**\s", re.IGNORECASE)
_BLOCK_TO = re.compile(r"^\**(?:to|subject|an|betreff|[àa]|objet)\s?:\**\s", re.IGNORECASE)
_BLOCK_SPAN = 6
# A horizontal rule as mail clients and html2text ("* * *" for <hr>) write it.
_RULE = re.compile(r"[\s*_=~-]*")


def strip_quoted(text: str) -> str:
    """Return only the newly written part of `text`; the whole `text` if nothing would remain."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = lines[: _hard_cut_index(lines)]
    kept = _drop_quotes(lines)
    while kept and _RULE.fullmatch(kept[-1]):  # blank lines and the rule above the history
        kept.pop()
    new = "\n".join(kept).strip("\n")
    return new if new.strip() else text


def _hard_cut_index(lines: list[str]) -> int:
    """Index of the first line where appended history or a signature begins."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if _HARD_CUT.match(stripped):
            return index
        if _BLOCK_FROM.match(stripped) and _is_header_block(lines[index + 1 : index + _BLOCK_SPAN]):
            return index
        width, attribution = _attribution(lines, index)
        if width and _history_is_unquoted(lines, index + width, attribution):
            return index
    return len(lines)


def _is_header_block(following: list[str]) -> bool:
    """Whether the lines after a "From:" line carry the rest of an Outlook header block."""
    stripped = [line.strip() for line in following]
    return any(_BLOCK_SENT.match(s) for s in stripped) and any(_BLOCK_TO.match(s) for s in stripped)


def _attribution(lines: list[str], index: int) -> tuple[int, str]:
    """(1 or 2, its text) when an attribution (possibly wrapped once) starts at `index`."""
    first = lines[index].strip()
    if not first or first.startswith(">") or len(first) > _MAX_ATTRIBUTION_CHARS:
        return 0, ""
    if _ATTRIBUTION.match(first) or _NAMED_ATTRIBUTION.match(first):
        return 1, first
    if index + 1 < len(lines):
        joined = f"{first} {lines[index + 1].strip()}"
        if len(joined) <= _MAX_ATTRIBUTION_CHARS and _ATTRIBUTION.match(joined):
            return 2, joined
    return 0, ""


def _history_is_unquoted(lines: list[str], after: int, attribution: str) -> bool:
    """Whether an attribution introduces unquoted history (cut it all) rather than ">" quotes.

    A mere "X wrote:" followed by plain lines may be the reporter pasting a log, so it
    only counts when it looks like a real attribution: an address, a year or a time in it.
    """
    if _introduces_quote(lines, after):
        return False
    return bool(_ATTRIBUTION_EVIDENCE.search(attribution))


def _drop_quotes(lines: list[str]) -> list[str]:
    """Drop ">" lines and the attribution lines that introduce them; keep interleaved replies."""
    kept: list[str] = []
    index = 0
    while index < len(lines):
        if lines[index].lstrip().startswith(">"):
            index += 1
            continue
        width, _ = _attribution(lines, index)
        if width and _introduces_quote(lines, index + width):
            index += width
            continue
        kept.append(lines[index])
        index += 1
    return kept


def _introduces_quote(lines: list[str], after: int) -> bool:
    """Whether the next non-blank line from `after` is quoted, or nothing follows."""
    following = next((line for line in lines[after:] if line.strip()), None)
    return following is None or following.lstrip().startswith(">")
