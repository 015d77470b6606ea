"""The systemd unit: verified by systemd itself, hardened to the exposure level we promise."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).parent.parent / "systemd" / "chatops-gateway.service"
FAILURE_UNIT = UNIT.parent / "chatops-gateway-failure@.service"
MAX_EXPOSURE = 1.5


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: scripts/test installs the Debian package systemd"
    return found


def _settings(unit: Path = UNIT) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_a_notify_service_with_watchdog_reload_and_credentials() -> None:
    """Type=notify with a watchdog, reload by SIGHUP, restarts on failure but not on exit 3,
    a dynamic user with a state directory, and port 25 without root."""
    s = _settings()
    assert s["Type"] == ["notify"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["3"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["DynamicUser"] == ["yes"] and s["StateDirectory"] == ["chatops-gateway"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    # The stop timeout outlasts the SMTP grace and both default drains (5 + 10 + 10 s).
    assert int(s["TimeoutStopSec"][0].removesuffix("s")) > 25


def test_descriptor_limit_leaves_room_for_every_listener() -> None:
    """LimitNOFILE is raised well above systemd's default soft limit of 1024, so idle
    connections to one port cannot starve the others' accept()."""
    [value] = _settings()["LimitNOFILE"]
    assert int(value.split(":")[0]) >= 16384


def test_large_buffers_are_given_back_to_the_system() -> None:
    """glibc serves buffers of 1 MiB or more (mail bodies) from mmap, so memory taken by a
    burst of large messages is returned once they are processed."""
    assert "MALLOC_MMAP_THRESHOLD_=1048576" in _settings()["Environment"]


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing (ExecStart pointed at this checkout's script)."""
    script = Path(sys.executable).parent / "chatops-gateway"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/chatops-gateway", str(script)))
    result = subprocess.run(
        [_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_security_exposure_is_at_most_one_and_a_half() -> None:
    """`systemd-analyze security --offline=true` scores the unit at or below 1.5."""
    result = subprocess.run(
        [
            _analyze(),
            "security",
            "--offline=true",
            "--no-pager",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(UNIT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE
    assert result.returncode == 0, result.stderr


def test_failure_hook_pages_through_notify_failure() -> None:
    """OnFailure= starts the template unit with this unit's name; restarts are limited, so a
    crash loop ends in failure; the template runs `notify-failure` once for that unit."""
    s, f = _settings(), _settings(FAILURE_UNIT)
    assert s["OnFailure"] == ["chatops-gateway-failure@%n.service"]
    assert s["StartLimitBurst"] and s["StartLimitIntervalSec"]
    assert f["Type"] == ["oneshot"] and f["DynamicUser"] == ["yes"]
    [command] = f["ExecStart"]
    assert command.split()[1:2] == ["notify-failure"] and command.endswith("--unit %i")


def test_systemd_analyze_verify_is_clean_with_the_failure_hook(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing in the service and its failure template (both
    pointed at this checkout's script), the OnFailure= reference resolving."""
    script = Path(sys.executable).parent / "chatops-gateway"
    units = []
    for source, name in ((UNIT, UNIT.name), (FAILURE_UNIT, "chatops-gateway-failure@.service")):
        target = tmp_path / name
        target.write_text(source.read_text().replace("/usr/local/bin/chatops-gateway", str(script)))
        units.append(target)
    instance = tmp_path / "chatops-gateway-failure@chatops-gateway.service.service"
    instance.symlink_to(units[1])
    result = subprocess.run(
        [_analyze(), "verify", str(units[0]), str(instance)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_failure_unit_exposure_is_at_most_one_and_a_half() -> None:
    """The failure template scores at or below 1.5 on `systemd-analyze security` too."""
    result = subprocess.run(
        [
            _analyze(),
            "security",
            "--offline=true",
            "--no-pager",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(FAILURE_UNIT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout[-1500:]
