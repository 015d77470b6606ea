"""Organisational domains (RFC 7489 §3.2) and relaxed identifier alignment.

The organisational domain of `mail.tenant.co.uk` is `tenant.co.uk`: one label below the
longest public suffix, as the Public Suffix List (PSL) says. Two domains are aligned when
their organisational domains are the same, so `bounces.tenant.example` vouches for
`eu.tenant.example`, while `github.io` (itself a public suffix) vouches for no one under it
and `other.co.uk` never for `tenant.co.uk`.

The list comes from the `publicsuffixlist` package, which ships a copy of the PSL and is
released whenever the list changes (its version ends in the list's date); README.md,
"Keeping the Public Suffix List current", says how it is kept up to date. Unknown top-level
domains (`.example`, `.internal`) count as public suffixes, as browsers and DMARC
implementations treat them.
"""

from __future__ import annotations

from functools import cache, lru_cache

from publicsuffixlist import PublicSuffixList


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the copy shipped with the package, parsed once


def _clean(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


@lru_cache(maxsize=4096)
def organisational_domain(domain: str) -> str | None:
    """The organisational domain of `domain`, or None when it is empty or a public suffix."""
    name = _clean(domain)
    if not name or ".." in name or name.startswith("."):
        return None
    found = _psl().privatesuffix(name)
    return str(found) if found else None


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment: both have the same organisational domain (and neither is a suffix)."""
    org = organisational_domain(domain)
    return org is not None and org == organisational_domain(from_domain)


def psl_version() -> str:
    """The version of the installed list (the package version, ending in the list's date)."""
    from importlib.metadata import version  # noqa: PLC0415  (only for diagnostics)

    return version("publicsuffixlist")
