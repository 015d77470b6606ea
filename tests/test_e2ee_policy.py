"""The trust policy for encrypted rooms and the encryption settings' validation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config.model import ConfigError
from gateway.plan.e2ee import DeviceFacts, PinnedDevice, device_verdict, undecryptable_notice
from tests.conftest import make_config

ALICE = "@alice:example.org"
KEY = "A" * 43
LAPTOP = DeviceFacts(ALICE, "LAPTOP", KEY)
STRANGER = DeviceFacts("@mallory:example.org", "EVIL", KEY)


def test_engineers_devices_are_trusted_on_first_use_and_others_blocked() -> None:
    """By default an engineer's device is trusted; anyone else's gets no keys."""
    assert device_verdict("tofu-engineers", [ALICE], [], LAPTOP)[0] == "trust"
    assert device_verdict("tofu-engineers", [ALICE], [], STRANGER)[0] == "block"


def test_verified_only_trusts_pinned_fingerprints_only() -> None:
    """verified-only trusts a pinned device with its pinned key, nothing else, and a pinned
    device whose key changed is blocked in every mode."""
    pin = PinnedDevice(ALICE, "LAPTOP", KEY)
    assert device_verdict("verified-only", [ALICE], [], LAPTOP)[0] == "block"
    assert device_verdict("verified-only", [ALICE], [pin], LAPTOP)[0] == "trust"
    changed = DeviceFacts(ALICE, "LAPTOP", "B" * 43)
    assert device_verdict("tofu-engineers", [ALICE], [pin], changed)[0] == "block"


def test_notice_names_sender_and_time() -> None:
    """The notice says who, when, and that nothing was done."""
    text = undecryptable_notice(ALICE, datetime(2026, 3, 2, 14, 2, tzinfo=UTC))
    assert "from @alice:example.org at 14:02 UTC" in text
    assert "please check that my device is verified" in text
    assert "not acted on" in text


def _matrix(**extra: object) -> dict[str, object]:
    return {
        "homeserver": "https://m.example.org",
        "user_id": "@bot:example.org",
        "password": {"value": "pw"},
        "incidents_room": "!r:example.org",
        "engineers": [ALICE],
        **extra,
    }


def test_encryption_needs_a_pickle_key_of_16_bytes(tmp_path: Path) -> None:
    """encryption = "on" without a pickle key, or with a short one, is a config error that
    names its TOML path; the library's default key is never used."""
    with pytest.raises(ConfigError, match="matrix: 'encryption"):
        make_config(tmp_path, matrix=_matrix(encryption="on"))
    with pytest.raises(ConfigError, match=r"matrix\.pickle_key: too short"):
        make_config(tmp_path, matrix=_matrix(encryption="on", pickle_key={"value": "short"}))
    config = make_config(tmp_path, matrix=_matrix(encryption="on", pickle_key={"value": "k" * 32}))
    assert config.matrix is not None and config.matrix.trust == "tofu-engineers"
