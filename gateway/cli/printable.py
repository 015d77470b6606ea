"""Text for a terminal: what the CLI prints can never carry control sequences.

Incident titles, timeline texts, reporters and relay errors come from mail and chat that
anyone can send. Printed as they are, C0 controls (ESC), DEL and the C1 controls
U+0080–U+009F (U+009B is a one-character CSI: it moves the cursor, recolours or rewrites the
terminal) would be obeyed by the operator's terminal, and bidirectional overrides would show
text in another order than it has. Each is shown as a visible escape (`\\x9b`, `\\u202e`)
instead; line breaks and tabs stay, since the output is made of lines.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every terminal control and direction override made visible."""
    return _UNSAFE.sub(_escape, text)
