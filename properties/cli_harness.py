"""Running ``shoplist`` as a person does: a fresh interpreter per command, with its own
device folder and no ``SHOPLIST_`` setting from the caller's environment."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import attrs


@attrs.frozen
class Brokers:
    """How a client reaches a running cluster: the front ends and their public key."""

    endpoints: list[str]
    key: str

    @property
    def flags(self) -> list[str]:
        """``--broker E ... --broker-key KEY`` for the command line."""
        return [*(a for b in self.endpoints for a in ("--broker", b)), f"--broker-key={self.key}"]

    @property
    def env(self) -> dict[str, str]:
        """The same as environment variables."""
        return {"SHOPLIST_BROKERS": ",".join(self.endpoints), "SHOPLIST_BROKER_KEY": self.key}


def cli_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any SHOPLIST_ setting, with ``home`` as the device."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLIST_")}
    return {**env, "SHOPLIST_HOME": str(home), **(extra or {})}


def run_cli(
    *args: str,
    home: Path,
    timeout: float = 60.0,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``shoplist ARGS`` in a fresh interpreter (killed by subprocess on timeout, which
    raises ``TimeoutExpired``: a hang fails the test), with ``env`` added to
    :func:`cli_env`, in ``cwd`` (default: the folder holding ``home``, never this
    repository, so nothing a command makes lands in the source tree)."""
    return subprocess.run(
        [sys.executable, "-m", "reference_cluster.cli.shoplist", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(home, env),
        cwd=cwd or home.parent,
        check=False,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line ``proc`` prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf and (left := deadline - time.monotonic()) > 0:
            if not sel.select(timeout=left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    if b"\n" not in buf:
        raise AssertionError(f"no line from pid {proc.pid} within {timeout:g}s")
    return buf.split(b"\n", 1)[0].decode()
