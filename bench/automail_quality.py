"""Automatic-mail recall and human-mail precision, and the group/list set through the pipeline.

What it measures, for the code in `--tree` (default: this checkout):

1. **Recall on automatic mail**: the share of messages known to be sent by software that the
   parser marks automatic (never answered, never paged), per corpus: the real-world
   bounce/feedback/auto-reply corpus beside the repository (`../shared/corpora/sisimai`,
   BSD 2-Clause) and the automatic messages of tests/fixtures/groupmail (an auto-reply, a
   Lotus Notes AUTO:, a moderation notice, a bounce and a digest through a Google Group or
   a Mailman 3 list).
2. **Human mail wrongly ignored**: people's reports marked automatic, on
   tests/fixtures/human (reports whose subjects resemble automatic mail: "Read:",
   "Returned mail", "Delivery failure", "AUTO-SCALING", "digest", "moderator", …) and the
   human posts of tests/fixtures/groupmail. Precision is 1 - wrongly ignored / human mail.
3. **The group/list set through the pipeline** (in hours and overnight, with the group named
   as a trusted forwarder when the code supports it, and the trusted MTA's results header
   on top as delivered): human reports opened (paged or ticketed per the rulebook) and
   acknowledged to their author; mails to a group or list address; automatic messages
   answered.

"Before" is the same script run against an older checkout, e.g.

    git archive 1dbee7f | (mkdir -p /tmp/before && tar -x -C /tmp/before)
    .venv/bin/python bench/automail_quality.py --tree /tmp/before

The fixtures and corpus always come from this checkout, so both runs see the same mail.

Run from the repository root, with the project's virtualenv:

    .venv/bin/python bench/automail_quality.py
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "sisimai" / "maildir"
GROUP = ROOT / "tests" / "fixtures" / "groupmail"
HUMAN = ROOT / "tests" / "fixtures" / "human"
GROUP_HUMAN = {
    "gg-rewritten-p1.eml",
    "gg-plain-p1.eml",
    "mm3-munged-p1.eml",
    "mm3-munged-cc.eml",
    "mm3-plain-p1.eml",
    "mm3-wrapped-p1.eml",
}
GROUP_ADDRESSES = {"emergency@paas.example", "emergency@lists.paas.example"}
OUR_MTA = (
    "Authentication-Results: mx.gw.example; arc=pass (i=1); dkim=pass"
    " header.d=paas.example; dkim=pass header.d=lists.paas.example\r\n"
)


# Logical name -> the module in the package layout, and in the flat layout of older code.
_MODULES = {
    "mail": ("gateway.parse.mail", "gateway.mail"),
    "imapsync": ("gateway.plan.imapsync", "gateway.imapsync"),
    "pipeline": ("gateway.plan.pipeline", "gateway.pipeline"),
    "replies": ("gateway.plan.replies", "gateway.replies"),
    "trust": ("gateway.plan.trust", "gateway.trust"),
    "domain": ("gateway.domain", "gateway.domain"),
    "book": ("rules.book", "rules.book"),
    "types": ("rules.types", "rules.types"),
    "forwarder": ("gateway.plan.forwarder", "gateway.forwarder"),
}


def load(tree: Path) -> dict[str, Any]:
    """The modules of the checkout in `tree` (this one by default), in either layout."""
    sys.path.insert(0, str(tree))
    mods: dict[str, Any] = {}
    for name, candidates in _MODULES.items():
        for module in candidates:
            if (tree / (module.replace(".", "/") + ".py")).is_file():
                mods[name] = importlib.import_module(module)
                break
        else:
            mods[name] = None  # older code: no trusted forwarders
    assert Path(mods["mail"].__file__).is_relative_to(tree), "wrong tree imported"
    return mods


def automatic(m: dict[str, Any], raw: bytes) -> str | bool | None:
    """The parser's reason, None for a person's mail, False when it raised."""
    try:
        mail = m["mail"].parse_mail(raw, m["imapsync"].envelope_sender(raw))
    except Exception:
        return False
    return mail.automatic  # type: ignore[no-any-return]


def classify(m: dict[str, Any], files: list[Path]) -> tuple[int, int, int]:
    """(messages, marked automatic, unreadable)."""
    results = [automatic(m, p.read_bytes()) for p in files]
    return len(files), sum(bool(r) for r in results), sum(r is False for r in results)


def settings(m: dict[str, Any]) -> Any:
    trust_mod, fwd = m["trust"], m["forwarder"]
    policy: dict[str, Any] = {
        "authserv_id": "mx.gw.example",
        "allow_domains": frozenset({"tenant.example", "t.example"}),
    }
    fields = {f.name for f in dataclasses.fields(trust_mod.TrustPolicy)}
    if fwd is not None and "forwarded" in fields:
        policy["forwarded"] = fwd.forwarder_judge(
            [
                fwd.Forwarder("google", "mx.google.com", "emergency.paas.example", "google.com"),
                fwd.Forwarder(
                    "mailman",
                    "lists.paas.example",
                    "emergency.lists.paas.example",
                    dkim_domain="lists.paas.example",
                ),
            ],
            mta_authserv_id="mx.gw.example",
        )
    sender = m["replies"].Sender("gateway@paas.example", "Support", "paas.example", "l")
    return m["pipeline"].Settings(sender, "gw", "Support", trust=trust_mod.TrustPolicy(**policy))


def group_set(m: dict[str, Any]) -> dict[str, int]:
    from datetime import UTC, datetime  # noqa: PLC0415

    domain, types = m["domain"], m["types"]
    book, s = m["book"].default_rulebook(), settings(m)
    counts = dict.fromkeys(
        [
            "human",
            "opened",
            "acknowledged to author",
            "mails to a group",
            "automatic",
            "automatic answered",
            "automatic opened",
        ],
        0,
    )
    authors = {}
    for now in (
        datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 22, 3, 0, tzinfo=UTC),
    ):
        for path in sorted(GROUP.glob("*.eml")):
            raw = OUR_MTA.encode() + path.read_bytes()
            env = m["imapsync"].envelope_sender(raw)
            row = domain.InboxRow(
                1,
                domain.Channel.EMAIL,
                types.Mailbox.EMERGENCY,
                env,
                ("emergency-gw@paas.example",),
                now,
                raw,
            )
            mail = m["mail"].parse_mail(raw, env)
            plan = m["pipeline"].plan_email(row, mail, None, 1, book, s, now)
            sent = [
                str(o.payload["rcpt_to"])
                for o in plan.outbox
                if o.kind == domain.OutboxKind.MAIL_SEND
            ]
            counts["mails to a group"] += sum(
                a in GROUP_ADDRESSES or "+bnc" in a or "-bounces" in a for a in sent
            )
            if path.name in GROUP_HUMAN:
                authors[path.name] = authors.get(path.name) or _author(path)
                counts["human"] += 1
                counts["opened"] += plan.new_incident is not None
                counts["acknowledged to author"] += sent == [authors[path.name]]
            else:
                counts["automatic"] += 1
                counts["automatic answered"] += bool(sent)
                counts["automatic opened"] += plan.new_incident is not None
    return counts


def _author(path: Path) -> str:
    text = path.read_text()
    for header in ("X-Original-From:", "Reply-To: Ana", "Cc:", "From:"):
        for line in text.splitlines():
            if line.startswith(header) and "@" in line and "via" not in line:
                return line.split("<")[-1].split(">")[0].split()[-1].lower()
    return ""


def _kinds() -> list[bytes]:
    """The automatic mail of tests/automatic_kinds.py (challenge-response, Notes AUTO:,
    read receipts in text, TNEF and multipart, moderation, anti-virus, postmaster-like
    senders, [AUTO GENERATED], digests), as this checkout's tests build it."""
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module("tests.automatic_kinds")
    return [param.values[0] for param in module.SIGNS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure")
    args = parser.parse_args()
    m = load(args.tree.resolve())
    corpus = (
        sorted(p for d in ("bsd", "err") for p in (CORPUS / d).iterdir() if p.is_file())
        if CORPUS.is_dir()
        else []
    )
    group_auto = sorted(p for p in GROUP.glob("*.eml") if p.name not in GROUP_HUMAN)
    kinds = _kinds()
    human = sorted(HUMAN.glob("*.eml")) + sorted(GROUP / n for n in GROUP_HUMAN)
    print(f"code: {args.tree}")
    for label, files in (
        ("sisimai corpus (automatic)", corpus),
        ("group/list fixtures (automatic)", group_auto),
    ):
        n, auto, bad = classify(m, files)
        print(
            f"{label:38} {n:4} messages  recall {auto / max(n, 1):7.2%}  "
            f"missed {n - auto - bad}  unreadable {bad}"
        )
    results = [automatic(m, raw) for raw in kinds]
    print(
        f"{'kinds that used to get through':38} {len(kinds):4} messages  recall "
        f"{sum(bool(r) for r in results) / max(len(kinds), 1):7.2%}  "
        f"missed {sum(r is None for r in results)}"
    )
    n, auto, bad = classify(m, human)
    print(
        f"{'human reports (fixtures)':38} {n:4} messages  wrongly ignored {auto}  "
        f"precision {(n - auto) / max(n, 1):7.2%}  unreadable {bad}"
    )
    counts = group_set(m)
    print(
        "group/list set through the pipeline (in hours and overnight): "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )


if __name__ == "__main__":
    main()
