"""Decoding body and header bytes whatever charset label the sender put on them.

Owns the WHATWG-style label aliases and the never-raising decode the mail parser uses for
bodies and for raw 8-bit header bytes. Pure.
"""

from __future__ import annotations

import codecs

__all__ = ["decode_text"]


# Labels senders get wrong, mapped as the WHATWG Encoding Standard does: to the superset
# mail clients actually use, so "iso-8859-1" text with curly quotes decodes as written.
# "us-ascii" is so often 8-bit in practice that it gets the unlabelled treatment.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "",
    "ascii": "",
    "gb2312": "gb18030",
    "ks_c_5601-1987": "cp949",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
}


def decode_text(data: bytes, charset: str | None) -> str:
    """Decode body bytes, never raising.

    The declared charset if the bytes fit it, else UTF-8 if they fit that (a common
    mislabelling), else the declared charset with replacement characters. Absent and
    unknown charsets: UTF-8, else cp1252 with replacement characters.
    """
    label = (charset or "").strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(label, label)
    attempts = ((name, "strict"), ("utf-8", "strict"), (name, "replace")) if name else ()
    for encoding, errors in attempts or (("utf-8", "strict"),):
        try:
            return data.decode(codecs.lookup(encoding).name, errors)
        except (LookupError, ValueError):  # an unknown or absurd label, bytes that do not fit
            continue
    return data.decode("cp1252", errors="replace")
