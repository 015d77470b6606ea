"""Reload (SIGHUP, `systemctl reload`): a valid rulebook is swapped in, an invalid one is
rejected with its errors logged and the running one kept."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from structlog.testing import capture_logs

import rules
from gateway.app import App
from gateway.cli.commands import _load_both
from gateway.run import metrics
from tests.conftest import IN_HOURS, email_bytes, eventually, ticking
from tests.daemon import Daemon
from tests.test_app_e2e import incidents, send

UNMATCHED = "Hello, a note about the colour of the xyzzy plugh widget on our page."


def _rules(priority: str) -> str:
    """The default rulebook with the support mailbox's no-match priority changed."""
    text = (Path(rules.__file__).parent / "default.toml").read_text()
    marker = '[mailbox.support]\npriority = "P4"'
    assert marker in text
    return text.replace(marker, f'[mailbox.support]\npriority = "{priority}"')


def _config(folder: Path, smtp_port: int = 0) -> Path:
    path = folder / "gateway.toml"
    path.write_text(
        f'[state]\ndir = "{folder / "state"}"\n[smtp]\nport = {smtp_port}\n'
        '[http]\nport = 0\n[rules]\nfile = "rules.toml"\n'
    )
    (folder / "rules.toml").write_text(_rules("P4"))
    return path


@asynccontextmanager
async def daemon_app(path: Path) -> AsyncIterator[App]:
    """The real App with a loader for its configuration file, as `run --config` builds it."""
    load = partial(_load_both, path)
    config, book = load()
    app = App(config, book, clock=ticking(IN_HOURS), loader=load)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    await asyncio.wait_for(app.ready.wait(), 30)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _report(app: App, subject: str) -> str:
    assert app.smtp_port
    await send(
        app.smtp_port, email_bytes(subject=subject, body=UNMATCHED), rcpt="support@localhost"
    )
    state = Path(app.config.state_dir())
    found = await eventually(lambda: [i for i in incidents(state) if i.title == subject])
    return str(found[0].priority)


async def test_a_valid_rulebook_is_swapped_in(tmp_path: Path) -> None:
    """After a reload, new mail is triaged by the new rulebook; the reload is logged."""
    path = _config(tmp_path)
    before = metrics.RELOADS.value(result="ok")
    async with daemon_app(path) as app:
        assert await _report(app, "Widget colour one") == "P4"
        (tmp_path / "rules.toml").write_text(_rules("P3"))
        with capture_logs() as logs:
            app.request_reload()
            await eventually(lambda: metrics.RELOADS.value(result="ok") > before)
        assert await _report(app, "Broken footer link on the docs page") == "P3"
    [event] = [e for e in logs if e["event"] == "gateway.reloaded"]
    assert event["needs_restart"] == []


async def test_an_invalid_rulebook_is_rejected_and_the_old_one_kept(tmp_path: Path) -> None:
    """A broken rulebook: every error logged, the running rulebook keeps deciding."""
    path = _config(tmp_path)
    before = metrics.RELOADS.value(result="rejected")
    async with daemon_app(path) as app:
        old = app.rulebook
        (tmp_path / "rules.toml").write_text(_rules("P9"))
        with capture_logs() as logs:
            app.request_reload()
            await eventually(lambda: metrics.RELOADS.value(result="rejected") > before)
        assert app.rulebook is old
        assert await _report(app, "Widget colour three") == "P4"
    [event] = [e for e in logs if e["event"] == "gateway.reload_rejected"]
    assert event["log_level"] == "error"
    assert event["errors"] == ["mailbox.support.priority: Input should be 'P1', 'P2', 'P3' or 'P4'"]


async def test_settings_that_need_a_restart_are_named(tmp_path: Path) -> None:
    """A changed SMTP port is not applied live; the reload says it needs a restart."""
    path = _config(tmp_path)
    async with daemon_app(path) as app:
        path.write_text(path.read_text().replace("[smtp]\nport = 0", "[smtp]\nport = 2526"))
        assert app.service is not None and app.loader is not None
        with capture_logs() as logs:
            assert await app.service.reload(app.loader, lambda _c, _b: None)
    [event] = [e for e in logs if e["event"] == "gateway.reloaded"]
    assert event["needs_restart"] == ["smtp"]


async def test_a_reload_repeats_the_configuration_warnings(tmp_path: Path) -> None:
    """A risky setting introduced by a reload is warned about, as `run` does at start."""
    path = _config(tmp_path)
    async with daemon_app(path) as app:
        risky = '[smtp]\nhost = "0.0.0.0"\nport = 0\n'
        trust = '[trust]\ntrusted_authserv_id = "mx.example.net"\n'
        path.write_text(path.read_text().replace("[smtp]\nport = 0\n", risky) + trust)
        assert app.service is not None and app.loader is not None
        with capture_logs() as logs:
            assert await app.service.reload(app.loader, lambda _c, _b: None), logs
    warnings = [e for e in logs if e["event"] == "config.warning"]
    assert [w["log_level"] for w in warnings] == ["warning"]
    assert str(warnings[0]["problem"]).startswith("smtp.host: the listener on 0.0.0.0")


def _events(log: Path, name: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == name:
                out.append(entry)
    return out


def test_sighup_to_the_daemon_rejects_a_bad_rulebook_then_takes_a_good_one(tmp_path: Path) -> None:
    """The real daemon: SIGHUP with a broken rulebook logs the errors and keeps running;
    after the file is fixed, SIGHUP loads it."""
    d = Daemon(tmp_path, '[rules]\nfile = "rules.toml"\n')
    (tmp_path / "rules.toml").write_text(_rules("P4"))
    d.start()
    try:
        assert d.proc is not None
        (tmp_path / "rules.toml").write_text("[[rule]]\nid = 3\n")
        d.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: _events(d.log, "gateway.reload_rejected"))
        assert d.proc.poll() is None
        (tmp_path / "rules.toml").write_text(_rules("P3"))
        d.proc.send_signal(signal.SIGHUP)
        # gateway.reloaded is an info line (this daemon logs warnings): ask its metrics.
        _wait_for(lambda: 'chatops_reloads_total{result="ok"} 1' in _metrics(d))
        assert 'chatops_reloads_total{result="rejected"} 1' in _metrics(d)
        assert d.stop() == 0
    finally:
        d.kill()
    [rejected] = _events(d.log, "gateway.reload_rejected")
    assert rejected["errors"]


def _metrics(d: Daemon) -> str:
    url = (tmp := d.folder / "state" / "http-endpoint").read_text().strip()
    assert tmp.exists()
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def _wait_for(check: object) -> None:
    assert callable(check)
    for _ in range(600):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("the daemon did not log it")
