"""A network namespace joined to the host by a veth pair, for partition tests: a process
started in it (`ip netns exec`) reaches the host only over the pair, and `cut()` takes the
host's end down (packets are dropped, nothing is refused: a real partition), `heal()` brings
it back. Needs root and iproute2."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Netns:
    """The namespace `name`; the host is `host_ip`, the namespace `ns_ip` (a /30)."""

    def __init__(self, index: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"gw{tag}"
        self.host_if, self.ns_if = f"vh{tag}", f"vn{tag}"
        self.host_ip, self.ns_ip = f"10.231.{index}.1", f"10.231.{index}.2"
        self.cidr = f"10.231.{index}.0/30"

    def create(self) -> None:
        """Make the namespace, the pair and the addresses; loopback up inside."""
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        self.run("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self.run("ip", "link", "set", self.ns_if, "up")
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *argv: str) -> None:
        """Run a command inside the namespace."""
        subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], check=True, capture_output=True, timeout=30
        )

    def prefix(self) -> list[str]:
        """The argv prefix that starts a process inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Partition: the host's end of the pair goes down."""
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        """The link comes back."""
        _ip("link", "set", self.host_if, "up")

    def delete(self) -> None:
        """Remove the pair and the namespace."""
        subprocess.run(
            ["ip", "link", "del", self.host_if], capture_output=True, timeout=30, check=False
        )
        subprocess.run(
            ["ip", "netns", "del", self.name], capture_output=True, timeout=30, check=False
        )


def _free_index(start: int) -> int:
    """The first 10.231.N.0/30 from `start` on that no interface uses (a namespace left
    behind by a killed run keeps its addresses, and a second pair on them would not route)."""
    used = subprocess.run(
        ["ip", "-o", "addr"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    index = start
    while f" 10.231.{index}.1/" in used and index < 254:
        index += 1
    return index


def available() -> bool:
    """Root and iproute2: what namespaces need."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


@contextmanager
def namespace(index: int = 1) -> Iterator[Netns]:
    """A fresh namespace joined to the host (skipped without root, except in CI)."""
    if not available():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "network namespaces need root and iproute2: in CI the partition test must run",
                pytrace=False,
            )
        pytest.skip("network namespaces need root and iproute2")
    ns = Netns(_free_index(index))
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()
