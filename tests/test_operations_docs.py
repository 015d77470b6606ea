"""The operator's documents stay true: the example configuration and the IMAP-only set-up in
docs/operations.md pass the real `check-config`, and the unit's Documentation= pages are
ones the README installs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETS = (
    "smtp-password",
    "pagerduty-routing-key",
    "matrix-access-token",
    "imap-password",
    "zendesk-token",
    "threading-key",
)


def check_config(path: Path, credentials: Path | None) -> subprocess.CompletedProcess[str]:
    """`chatops-gateway check-config PATH`, with $CREDENTIALS_DIRECTORY as systemd sets it."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    if credentials is not None:
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )


def test_example_configuration_passes_check_config(tmp_path: Path) -> None:
    """examples/gateway.toml is valid once its credentials exist (as LoadCredential= gives
    them), and names every missing credential file when they do not."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in SECRETS:
        (creds / name).write_text("s3cret-" + name.replace("-", "") * 3 + "\n")
    example = ROOT / "examples" / "gateway.toml"
    good = check_config(example, creds)
    assert good.returncode == 0, good.stderr
    missing = check_config(example, tmp_path / "empty")
    assert missing.returncode == 3
    for name in (
        "pagerduty.routing_key",
        "mail_out.smtp.password",
        "matrix.access_token",
        "imap[0].password",
        "tickets.zendesk.token",
        "threading.key",
    ):
        assert f"{name}.file: cannot read secret file" in missing.stderr
    assert "s3cret" not in good.stdout + good.stderr + missing.stderr


def test_imap_only_setup_in_the_docs_passes_check_config(tmp_path: Path) -> None:
    """The IMAP-only TOML block of docs/operations.md is a valid configuration."""
    text = (ROOT / "docs" / "operations.md").read_text()
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[imap]]" in b]
    config = tmp_path / "gateway.toml"
    config.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n' + block)
    (tmp_path / "imap-password").write_text("secret\n")
    done = check_config(config, None)
    assert done.returncode == 0, done.stderr


def test_unit_documentation_pages_are_installed_by_the_readme() -> None:
    """Each Documentation= file:// page of the unit is a file the README's install step copies
    to /usr/share/doc/chatops-gateway."""
    unit = (ROOT / "systemd" / "chatops-gateway.service").read_text()
    [line] = [x for x in unit.splitlines() if x.startswith("Documentation=")]
    pages = line.removeprefix("Documentation=").split()
    readme = (ROOT / "README.md").read_text()
    assert "install -D -m 0644 -t /usr/share/doc/chatops-gateway README.md docs/*.md" in readme
    for page in pages:
        name = page.removeprefix("file:///usr/share/doc/chatops-gateway/")
        assert name != page, page
        assert (ROOT / name).exists() or (ROOT / "docs" / name).exists(), name
