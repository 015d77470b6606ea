"""Log lines journald can filter: with standard output connected to the journal
($JOURNAL_STREAM names it), each JSON line carries its syslog priority prefix; elsewhere
the lines stay plain JSON for jq."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import structlog, logging
from gateway.run import logs
logs.configure("info", "json")
log = structlog.get_logger("gateway.test")
log.error("test.failed", reason="x")
log.warning("test.odd")
log.info("test.fine")
log.debug("test.hidden")
logging.getLogger("aiosmtpd").warning("library warning")
"""


def _run(out: Path, *, journal: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with out.open("wb") as stream:
        if journal:
            st = os.fstat(stream.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run(
            [sys.executable, "-c", SCRIPT],
            stdout=stream,
            env=env,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    return out.read_text().splitlines()


def test_lines_to_the_journal_carry_their_priority(tmp_path: Path) -> None:
    """Error, warning and info lines start with <3>, <4>, <6>; library lines too."""
    lines = _run(tmp_path / "journal", journal=True)
    assert [line[:3] for line in lines] == ["<3>", "<4>", "<6>", "<4>"]
    events = [json.loads(line[3:])["event"] for line in lines]
    assert events == ["test.failed", "test.odd", "test.fine", "library warning"]


def test_lines_elsewhere_are_plain_json(tmp_path: Path) -> None:
    """Without the journal, every line is a JSON object as before."""
    lines = _run(tmp_path / "file", journal=False)
    assert [json.loads(line)["level"] for line in lines] == ["error", "warning", "info", "warning"]
