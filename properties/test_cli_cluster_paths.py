"""``shoplist cluster`` and ``shoplist demo`` on the unhappy paths: bad endpoints and
ports, a port already taken, a data directory that is a file, where the data goes by
default, and what the commands say.

Every process a test starts is stopped by the test (by pid), also when it fails; every
wait polls with a deadline; the network is 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_harness import cli_env, run_cli

from reference_cluster.cli import demo as demo_module
from reference_cluster.cli.shoplist import main
from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port, stop_process
from reference_cluster.processes.config import LocalLayout

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)


def one_line_error(done: subprocess.CompletedProcess[str]) -> tuple[int, int, bool, str]:
    """Exit status, number of lines on standard error, whether a traceback is there, and
    what was printed on standard output."""
    err = done.stderr.strip()
    return done.returncode, len(err.splitlines()), "Traceback" in err, done.stdout


# -- bad flags and variables --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "status", "says"),
    [
        (["cluster", "status", "--broker", "nonsense"], {}, 2, "got 'nonsense'"),
        (
            ["cluster", "status", "--timeout", "0.3"],
            {"SHOPLIST_BROKERS": "127.0.0.1:1"},
            1,
            "SHOPLIST_BROKERS: expected a ZeroMQ endpoint",
        ),
        (["cluster", "up", "--base-port", "99999"], {}, 2, "expected a base port from 1 to"),
        (["cluster", "status", "--base-port", "65500"], {}, 2, "(the cluster uses PORT to"),
        (["cluster", "up"], {"SHOPLIST_BASE_PORT": "99999"}, 1, "SHOPLIST_BASE_PORT: expected"),
        (["cluster", "status", "--host", "bad host"], {}, 2, "expected a host name or address"),
    ],
)
def test_bad_endpoints_and_ports_are_one_line_errors(
    tmp_path: Path, args: list[str], env: dict[str, str], status: int, says: str
) -> None:
    """A bad endpoint or port, given as a flag (status 2) or in a variable (status 1),
    is one line on standard error, without a traceback, and nothing starts."""
    done = run_cli(*args, home=tmp_path, cwd=tmp_path, env=env)
    assert (status, 1, False, "", True) == (*one_line_error(done), says in done.stderr), done.stderr
    assert not (tmp_path / "shoplist-data").exists()


# -- cluster up ---------------------------------------------------------------------------


def _processes_mentioning(text: str) -> list[int]:
    """The pids whose command line contains ``text`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def _gone(text: str, timeout: float = 10.0) -> list[int]:
    """Poll until no process mentions ``text``; return those still there at the end."""
    deadline = time.monotonic() + timeout
    left = _processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _processes_mentioning(text)
    return left


@pytest.mark.timeout(120)
def test_cluster_up_with_a_port_taken_names_the_process_and_why(tmp_path: Path) -> None:
    """When broker b0's port is taken, ``cluster up`` fails fast with one line naming b0,
    its exit status and its own error, and leaves no process behind."""
    base = free_base_port()
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        started = time.monotonic()
        done = run_cli(
            "cluster",
            "up",
            "--quiet",
            "--base-port",
            str(base),
            "--data-dir",
            str(data),
            home=tmp_path,
            timeout=90.0,
        )
        elapsed = time.monotonic() - started
    err = done.stderr.strip()
    assert (1, 1, False, "") == one_line_error(done), err
    assert err.startswith("shoplist: error: broker b0 exited with status 1 before it was ready: ")
    said = f"Address already in use (tcp://127.0.0.1:{base})" in err
    assert (said, elapsed < 20.0) == (True, True), (err, elapsed)
    assert [] == _gone(str(data))  # the servers' command lines name their stores


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> str:
    """What ``proc`` prints on standard output up to the line holding ``marker``."""
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker not in buf and (left := deadline - time.monotonic()) > 0:
            if not sel.select(timeout=left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    if marker not in buf:
        raise AssertionError(f"pid {proc.pid} printed no {marker!r} within {timeout:g}s: {buf!r}")
    return buf.decode()


@pytest.mark.timeout(120)
def test_cluster_up_keeps_its_data_in_the_home_folder_and_tells_clients_the_way(
    tmp_path: Path,
) -> None:
    """Without --data-dir, ``cluster up`` keeps the stores in $SHOPLIST_HOME/cluster (not
    in the working directory); on a port that is not the default it says how clients
    reach it; ``cluster status`` then reports servers never restarted."""
    base = free_base_port()
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    up = subprocess.Popen(
        [sys.executable, "-m", "reference_cluster.cli.shoplist", "cluster", "up", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=cli_env(home, {"SHOPLIST_BASE_PORT": str(base)}),
        cwd=cwd,
    )
    try:
        text = _read_until(up, b"clients", timeout=60.0)
        text += _read_until(up, b"\n", timeout=10.0) if not text.endswith("\n") else ""
        status = run_cli("cluster", "status", home=home, env={"SHOPLIST_BASE_PORT": str(base)})
        up.send_signal(signal.SIGINT)
        assert 0 == up.wait(timeout=30)
    finally:
        stop_process(up)
    clients = [line for line in text.splitlines() if line.startswith("clients")]
    expected = (
        f"clients: export SHOPLIST_BASE_PORT={base}, or --broker tcp://127.0.0.1:{base} "
        f"--broker tcp://127.0.0.1:{base + 10}"
    )
    assert [expected] == clients
    assert f"cluster up, data in {home / 'cluster'} " in text
    assert (True, [], False) == (
        (home / "cluster" / "s1.sqlite").exists(),
        sorted(p.name for p in cwd.iterdir()),
        "(the default)" in text,
    )
    servers = [line for line in status.stdout.splitlines() if line.startswith("server")]
    assert 3 == len(servers) and all(line.endswith("never restarted") for line in servers), (
        status.stdout
    )


@pytest.mark.parametrize("via", ["--data-dir", "SHOPLIST_HOME"])
def test_cluster_up_refuses_a_data_dir_that_is_a_file(tmp_path: Path, via: str) -> None:
    """A data directory (or home folder) that is a file is one line, status 1."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    if via == "--data-dir":
        done = run_cli("cluster", "up", "--data-dir", str(a_file), home=tmp_path)
        expected_path = a_file
    else:
        done = run_cli("cluster", "up", home=a_file)
        expected_path = a_file / "cluster"
    assert (1, 1, False, "") == one_line_error(done), done.stderr
    expected = f"shoplist: error: cannot keep the cluster's data in {expected_path}: "
    assert (True, True) == (done.stderr.startswith(expected), "is a file" in done.stderr)


# -- cluster status -----------------------------------------------------------------------


@pytest.fixture
def running(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this process's children, stopped by pid after the test."""
    with LocalCluster(
        tmp_path / "data", layout=LocalLayout("127.0.0.1", free_base_port()), timing=TIMING
    ) as cluster:
        cluster.start()
        yield cluster


@pytest.mark.timeout(120)
def test_cluster_status_counts_restarts_in_words(
    running: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server started twice says it was restarted once; the others, never."""
    running.kill("s1")
    running.restart("s1")
    running.wait_for_servers(running.servers, timeout=30.0)
    base = str(running.layout.base)
    data = str(tmp_path / "data")
    assert 0 == main(["cluster", "status", "--base-port", base, "--data-dir", data])
    lines = capsys.readouterr().out.splitlines()
    ends = {line.split()[1]: line.rsplit(",", 1)[1].strip() for line in lines if "lists" in line}
    assert {"s1": "restarted once", "s2": "never restarted", "s3": "never restarted"} == ends
    assert all(" 0 lists," in line for line in lines if line.startswith("server"))


def test_cluster_status_help_describes_the_host_as_where_the_cluster_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``status --help`` says --host is where the cluster runs; ``up --help`` that it is
    the address to listen on."""
    helps = {}
    for verb in ("status", "up"):
        with pytest.raises(SystemExit):
            main(["cluster", verb, "--help"])
        helps[verb] = " ".join(capsys.readouterr().out.split())
    assert ("the host the cluster runs on" in helps["status"], "listen" in helps["status"]) == (
        True,
        False,
    )
    assert "the address to listen on" in helps["up"]


# -- demo ---------------------------------------------------------------------------------


def test_demo_help_has_a_description_and_only_its_own_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``demo --help`` describes the demo and lists --json and --keep, not the client's
    flags that do nothing for it."""
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    text = capsys.readouterr().out
    flags = {word.strip("[],") for word in text.split() if word.startswith(("--", "[--"))}
    assert (0, {"--help", "--json", "--keep"}) == (info.value.code, flags), text
    assert "partition" in text.split("options:")[0]


@pytest.mark.parametrize(
    ("argv", "as_json"),
    [(["demo"], False), (["demo", "--json"], True), (["--json", "demo"], True)],
)
def test_demo_takes_json_before_or_after_its_name(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], as_json: bool
) -> None:
    """``shoplist demo --json`` and ``shoplist --json demo`` both ask for JSON."""
    seen: list[dict[str, Any]] = []

    def fake_run_demo(**kwargs: Any) -> int:
        seen.append(kwargs)
        return 0

    monkeypatch.setattr(demo_module, "run_demo", fake_run_demo)
    assert 0 == main(argv)
    assert [{"keep": False, "as_json": as_json}] == seen


def test_json_of_a_failed_cluster_command_is_parseable(tmp_path: Path) -> None:
    """With --json, a cluster command that fails still prints one JSON object."""
    done = run_cli(
        "cluster",
        "status",
        "--json",
        "--broker",
        f"tcp://127.0.0.1:{free_base_port()}",
        "--timeout",
        "0.3",
        "--insecure",
        home=tmp_path,
    )
    assert (1, "ClusterUnavailable") == (done.returncode, json.loads(done.stdout)["type"])


def test_a_client_without_the_brokers_key_says_where_to_find_it(tmp_path: Path) -> None:
    """Online, without --broker-key, SHOPLIST_BROKER_KEY or a cluster made in --home,
    a command fails in one line that names the key file to use (nothing is sent in clear)."""
    done = run_cli("--json", "cluster", "status", "--timeout", "0.3", home=tmp_path)
    error = json.loads(done.stdout)
    assert (1, "KeysMissing") == (done.returncode, error["type"])
    assert "--broker-key" in error["error"] and "frontend.key" in error["error"]
