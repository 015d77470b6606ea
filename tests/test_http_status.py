"""The status endpoint (/healthz, /metrics), `chatops-gateway status`, and secrets read from
systemd's credentials directory."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config.model import ConfigError, parse_config
from gateway.run import metrics
from gateway.run.service import endpoint_file, write_endpoint
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.daemon import Daemon
from tests.fakes.pagerduty import FakePagerDuty
from tests.peers.synapse import Synapse
from tests.test_app_e2e import send

ROUTING_KEY = "K" * 32


async def get(port: int | None, path: str) -> tuple[int, str, Any]:
    """GET from the status endpoint: status, content type, body (JSON decoded for /healthz)."""
    assert port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        body = await (resp.json() if path == "/healthz" else resp.text())
        return resp.status, resp.headers["Content-Type"], body


def sample(text: str, series: str) -> float:
    """The value of one exposed series (fails when it is missing)."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not exposed"
    return float(match.group(1))


async def test_healthz_reports_components_egress_and_queues(tmp_path: Path) -> None:
    """A healthy daemon: 200, SMTP listening, local egresses ok, empty queues."""
    async with running(make_config(tmp_path)) as app:
        status, kind, body = await get(app.http_port, "/healthz")
    assert status == 200 and kind == "application/json; charset=utf-8"
    assert body["healthy"] is True and body["problems"] == []
    assert body["components"] == {"smtp": "listening", "canary": "waiting"}
    assert body["egress"] == {"pager": "local: ok", "mail": "folder: ok"}
    assert body["outbox"] == {"pending": 0, "oldest_age_s": 0.0, "retrying": 0, "dead": 0}


async def test_metrics_count_accepted_mail_triage_and_deliveries(tmp_path: Path) -> None:
    """/metrics in the Prometheus text format: the counters move with real traffic, the
    gauges describe the queues, the SLA counters are declared."""
    async with FakePagerDuty() as pd:
        config = make_config(
            tmp_path, pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd.url}
        )
        async with running(config, clock=ticking(IN_HOURS)) as app:
            replies = metrics.REPLIES.value(channel="email")
            pages = metrics.PAGES.value(action="trigger")
            _, _, before = await get(app.http_port, "/metrics")
            assert app.smtp_port
            await send(app.smtp_port, email_bytes())
            with pytest.raises(Exception, match="550"):
                await send(app.smtp_port, email_bytes(), rcpt="nobody@localhost")
            await eventually(lambda: pd.events)
            await eventually(
                lambda: (
                    metrics.REPLIES.value(channel="email") > replies
                    and metrics.PAGES.value(action="trigger") > pages
                )
            )
            status, kind, after = await get(app.http_port, "/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")

    def delta(series: str) -> float:
        old = sample(before, series) if series in before else 0.0
        return sample(after, series) - old

    assert delta('chatops_messages_accepted_total{channel="smtp"}') == 1
    assert delta('chatops_messages_rejected_total{reason="unknown_recipient"}') == 1
    assert delta('chatops_triage_total{outcome="P1"}') == 1
    assert delta('chatops_pages_sent_total{action="trigger"}') == 1
    assert delta('chatops_replies_sent_total{channel="email"}') == 1
    assert "# TYPE chatops_sla_reminders_total counter" in after
    assert "# TYPE chatops_sla_breaches_total counter" in after
    assert sample(after, "chatops_outbox_depth") == 0
    assert sample(after, 'chatops_component_state{component="smtp",state="listening"}') == 1
    assert "# TYPE chatops_outbox_oldest_age_seconds gauge" in after


async def _unhealthy(port: int | None) -> tuple[int, str, Any] | None:
    answer = await get(port, "/healthz")
    return answer if answer[0] == 503 else None


@pytest.mark.peer
async def test_bad_matrix_credentials_make_healthz_answer_503(
    tmp_path: Path, synapse: Synapse
) -> None:
    """A refused password parks the link in bad_credentials: READY still comes (a reported
    state), /healthz says 503 and names it."""
    bot, _, _ = synapse.register("gateway", password="the-right-one")
    config = make_config(
        tmp_path,
        matrix={
            "homeserver": synapse.url,
            "user_id": bot,
            "password": {"value": "a-wrong-one"},
            "incidents_room": "!nowhere",
            "engineers": ["@eng:localhost"],
        },
    )
    async with running(config) as app:
        assert app.matrix is not None and app.matrix.state == "bad_credentials"
        status, _, body = await get(app.http_port, "/healthz")
        _, _, text = await get(app.http_port, "/metrics")
    assert status == 503
    assert body["components"]["matrix"] == "bad_credentials"
    assert "matrix: bad_credentials" in body["problems"]
    assert sample(text, "chatops_up") == 0


def test_status_command_summarises_the_running_daemon_and_fails_when_it_is_down(
    tmp_path: Path,
) -> None:
    """`status` prints health and counters (exit 0); with the daemon gone it says so (exit 1)."""
    d = Daemon(tmp_path)
    d.start()
    try:
        _wait_for_endpoint(tmp_path / "state" / "http-endpoint")
        shown = d.cli("status")
        as_json = d.cli("status", "--json")
    finally:
        assert d.stop() == 0
    assert shown.returncode == 0, shown.stderr
    assert "chatops-gateway: healthy" in shown.stdout
    assert re.search(r"smtp\s+listening", shown.stdout)
    assert "outbox: 0 pending" in shown.stdout
    assert as_json.returncode == 0 and '"healthy": true' in as_json.stdout
    down = d.cli("status")
    assert down.returncode == 1
    assert "the daemon is not running" in down.stderr


def _wait_for_endpoint(path: Path) -> None:
    """Daemon.start returns once SMTP answers; the status endpoint may bind a moment later."""
    for _ in range(400):
        if path.exists() and path.read_text().strip():
            return
        time.sleep(0.05)
    raise AssertionError("the daemon did not write its status endpoint")


def test_the_endpoint_stays_on_loopback_unless_allowed() -> None:
    """A non-loopback address is a configuration error naming its path, unless allowed."""
    with pytest.raises(ConfigError) as err:
        parse_config({"http": {"host": "0.0.0.0"}})
    assert err.value.errors == [
        "http: host: not a loopback address (set allow_remote = true to allow)"
    ]
    assert parse_config({"http": {"host": "0.0.0.0", "allow_remote": True}}).http.port == 9725


async def test_secrets_come_from_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`{ file = "NAME" }` reads $CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=): the
    page goes out with that routing key, which never appears in the logs."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "pagerduty-routing-key").write_text(ROUTING_KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    async with FakePagerDuty(routing_keys={ROUTING_KEY}) as pd:
        config = make_config(
            tmp_path / "state",
            pagerduty={"routing_key": {"file": "pagerduty-routing-key"}, "url": pd.url},
        )
        async with running(config, clock=ticking(IN_HOURS)) as app:
            assert app.smtp_port
            await send(app.smtp_port, email_bytes())
            await eventually(lambda: pd.events)
    assert pd.events[0]["routing_key"] == ROUTING_KEY


def test_a_missing_credential_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential the unit did not load: check-config names the setting, exit code 3."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        parse_config({"pagerduty": {"routing_key": {"file": "absent"}}})
    assert err.value.errors == [
        "pagerduty.routing_key.file: cannot read secret file (No such file or directory)"
    ]


def test_the_endpoint_address_is_replaced_whole(tmp_path: Path) -> None:
    """The address file is written beside and renamed into place: `status` reads the old
    address or the new one, and no partial file is left behind."""
    config = parse_config({"state": {"dir": str(tmp_path)}})
    write_endpoint(config, "http://127.0.0.1:1111")
    write_endpoint(config, "http://127.0.0.1:2222")
    assert endpoint_file(config).read_text() == "http://127.0.0.1:2222\n"
    assert [p.name for p in tmp_path.iterdir()] == ["http-endpoint"]
