"""The systemd notify and watchdog protocol, against a datagram socket the test binds."""

from __future__ import annotations

import signal
import smtplib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.sdnotify import Notifier, watchdog_interval_s
from tests.daemon import Daemon
from tests.notify_socket import NotifySocket


def test_ready_arrives_after_the_smtp_port_answers_then_watchdog_and_stopping(
    tmp_path: Path,
) -> None:
    """READY=1 (with a STATUS line) only once SMTP listens; WATCHDOG=1 repeats; STOPPING=1 at
    SIGTERM, and the daemon exits cleanly."""
    with NotifySocket() as ns:
        d = Daemon(tmp_path)
        d.spawn({"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "200000"})
        try:
            ready = ns.until("READY")
            # Nothing retried here: at READY the listener must already answer.
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as client:
                assert client.noop()[0] == 250
            assert "smtp listening" in ready["STATUS"]
            pings = [ns.until("WATCHDOG") for _ in range(3)]
            assert len(pings) == 3
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)
            stopping = ns.until("STOPPING")
            assert stopping["STATUS"] == "stopping"
            assert d.proc.wait(30) == 0
        finally:
            d.kill()
    order = [next(iter(f)) for _, f in ns.received]
    # Pings may start during start-up (a slow start is not a hung one); they go on after it.
    assert "WATCHDOG" in order[order.index("READY") : order.index("STOPPING")]


def test_reload_sends_reloading_with_a_monotonic_timestamp_then_ready(tmp_path: Path) -> None:
    """SIGHUP: RELOADING=1 with MONOTONIC_USEC (as Type=notify-reload wants), then READY=1."""
    with NotifySocket() as ns:
        d = Daemon(tmp_path)
        d.spawn({"NOTIFY_SOCKET": ns.address})
        try:
            ns.until("READY")
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)
            reloading = ns.until("RELOADING")
            assert int(reloading["MONOTONIC_USEC"]) > 0
            ns.until("READY")
            assert d.stop() == 0
        finally:
            d.kill()


def test_abstract_namespace_address_is_reached() -> None:
    """NOTIFY_SOCKET=@name is a socket in the abstract namespace."""
    with NotifySocket(abstract=True) as ns:
        notifier = Notifier({"NOTIFY_SOCKET": ns.address})
        notifier.ready("smtp listening")
        assert ns.next() == {"READY": "1", "STATUS": "smtp listening"}
        notifier.stopping()
        assert ns.next()["STOPPING"] == "1"
        notifier.close()


def test_without_a_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    """Outside systemd the notifier is a no-op and has no watchdog."""
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.ready("x")
    notifier.stopping()


def test_a_vanished_socket_never_stops_the_daemon(tmp_path: Path) -> None:
    """A send to a socket that is gone is logged once and otherwise ignored."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with capture_logs() as logs:
        notifier.ready("x")
        notifier.notify(watchdog="1")
    notifier.close()
    assert [e["event"] for e in logs] == ["sdnotify.send_failed"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ],
)
def test_watchdog_pings_at_half_the_timeout(env: dict[str, str], expected: float | None) -> None:
    """The ping interval is half of WATCHDOG_USEC, only for the process it names."""
    assert watchdog_interval_s(env) == expected
