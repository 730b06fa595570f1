"""The ``shoplist`` command line: its error path, a session against a real cluster, and
the demo run to a converged table."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Brokers, cli_env, first_line, run_cli

from reference_cluster.cli.shoplist import main
from reference_cluster.processes.cluster import free_base_port, stop_process

PASSWORD = "correct horse battery"


def test_errors_are_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    """Not logged in, a bad argument, an unknown list, no cluster: each prints one line
    on standard error, no traceback, and exits non-zero."""
    dead = f"tcp://127.0.0.1:{free_base_port()}"
    runs = [
        run_cli("lists", home=tmp_path),
        run_cli("qty", "abc", "milk", "5", home=tmp_path),
        run_cli("--user", "nobody", "show", "abc", "--offline", home=tmp_path),
        run_cli(
            "cluster",
            "status",
            "--broker",
            dead,
            "--base-port",
            "1",
            "--timeout",
            "0.3",
            home=tmp_path,
        ),
    ]
    shapes = [
        (r.returncode, len(r.stderr.strip().splitlines()), "Traceback" in r.stderr, r.stdout)
        for r in runs
    ]
    assert [(1, 1, False, ""), (2, 1, False, ""), (1, 1, False, ""), (1, 1, False, "")] == shapes
    assert all(r.stderr.startswith("shoplist") for r in runs)


class Shell:
    """Runs ``shoplist`` commands in this process, as one device of one person."""

    def __init__(self, home: Path, brokers: Brokers, capsys: pytest.CaptureFixture[str]) -> None:
        self.base = ["--home", str(home), *brokers.flags]
        self.capsys = capsys

    def __call__(self, *args: str, stdin: str = "") -> tuple[int, Any, str]:
        """Exit status, the JSON printed, and standard error."""
        sys.stdin = io.StringIO(stdin)
        try:
            status = main([*args, *self.base, "--json"])
        finally:
            sys.stdin = sys.__stdin__
        out, err = self.capsys.readouterr()
        return status, json.loads(out) if out.strip() else None, err


def test_a_session_of_commands_against_the_cluster(
    brokers: Brokers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sign up, create, edit (also offline), share with a user, and delete as the owner
    only."""
    ann = Shell(tmp_path / "ann", brokers, capsys)
    ben = Shell(tmp_path / "ben", brokers, capsys)
    assert 0 == ann("signup", "ann", "--password-stdin", stdin=PASSWORD + "\n")[0]
    assert 0 == ben("signup", "ben", "--password-stdin", stdin=PASSWORD + "\n")[0]
    _, created, _ = ann("create", "Weekend")
    list_id = created["list_id"]
    short = list_id[:6]
    for args in (
        ("add", short, "milk", "2"),
        ("add", short, "eggs", "12"),
        ("qty", short, "milk", "+3"),
        ("qty", short, "eggs", "=6"),
        ("buy", short, "eggs"),
        ("add", short, "bread", "--offline"),
    ):
        assert 0 == ann(*args)[0], args
    assert 0 == ann("sync")[0]
    assert 0 == ann("share", short, "ben")[0]
    status, shown, _ = ben("show", list_id)
    items = {k: (v["quantity"], v["bought"]) for k, v in shown["items"].items()}
    assert (0, "Weekend") == (status, shown["name"])
    assert {"bread": (1, False), "eggs": (6, True), "milk": (5, False)} == items
    status, _, err = ben("delete", short)
    assert (1, 1, True) == (status, len(err.strip().splitlines()), "owner" in err)
    _, mine, _ = ann("lists")
    assert [(list_id, True)] == [(r["list_id"], r["mine"]) for r in mine["lists"]]
    assert (0, True) == (ann("delete", short)[0], ann("lists")[1]["lists"] == [])
    _, after, _ = ben("show", short)
    assert after["deleted"]


def test_the_shell_runs_one_command_a_line_with_its_flags(
    brokers: Brokers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shoplist shell`` runs each line as a command with the shell's flags, reports a bad
    line in one line and goes on, refuses ``cluster``, stops at ``quit``, and exits 1
    because a line failed."""
    cleo = Shell(tmp_path / "cleo", brokers, capsys)
    assert 0 == cleo("signup", "cleo", "--password-stdin", stdin=PASSWORD + "\n")[0]
    lines = [
        "create 'Game night'",
        "# a comment, then a blank line",
        "",
        "lists",
        "bogus",
        'add "unclosed',
        "cluster status",
        "quit",
        "create Never",
    ]
    sys.stdin = io.StringIO("\n".join(lines) + "\n")
    try:
        status = main(["shell", *cleo.base, "--json"])
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    answers = [json.loads(line) for line in out.splitlines()]
    created = answers[0]["list_id"]
    assert 2 == len(answers)
    assert [(created, "Game night")] == [(r["list_id"], r["name"]) for r in answers[1]["lists"]]
    expected = ["invalid choice: 'bogus'", "No closing quotation", "'cluster' does not run"]
    errors = err.strip().splitlines()
    assert (1, 3) == (status, len(errors))
    assert all(want in line for want, line in zip(expected, errors, strict=True)), errors


def test_the_demo_runs_to_a_converged_table(tmp_path: Path) -> None:
    """``shoplist demo`` exits 0 after printing six replicas (three holders, three
    clients) with one digest, having told the holder stops, the hint and the partition."""
    done = run_cli("demo", home=tmp_path, timeout=90.0)
    assert (0, "") == (done.returncode, done.stderr)
    story, table = done.stdout.split("converged", 1)
    holders = re.search(r"its holders: (s\d) (s\d) (s\d) ", story)
    assert holders is not None, story
    assert re.search(rf"{holders[3]}, a holder of the list, is killed", story)
    assert re.search(rf"{holders[2]} is killed too: {holders[1]} is the only holder up", story)
    assert re.search(r"(s\d), (the first|a) server after the holders, keeps it as a hint", story)
    assert re.search(r"(s\d) handed the hint back \(\1 handing 0\)", story)
    assert "W=2 could not be met there" in story
    rows = re.findall(
        r"^\s+(s\d|alice|bob|carol)\s+(holder|client)\s.*\s([0-9a-f]{16})$", table, re.M
    )
    assert [*holders.groups(), "alice", "bob", "carol"] == [r[0] for r in rows[:6]]
    assert 1 == len({r[2] for r in rows[:6]})
    assert "every process the demo started is stopped" in table


def test_the_demo_in_json_holds_the_story_and_stops_every_process(tmp_path: Path) -> None:
    """``shoplist demo --json``: 5 servers, the list on 3; with two holders killed a
    server after the holders takes a hint and hands it back once they restart; the
    partition's one-holder side is acknowledged through a hint too; every replica
    converges, no hint is left, and every process started (a restarted server twice) is
    gone."""
    done = run_cli("demo", "--json", home=tmp_path, timeout=90.0)
    assert (0, "") == (done.returncode, done.stderr)
    report = json.loads(done.stdout)
    placement = report["placement"]
    servers, holders, after = placement["servers"], placement["holders"], placement["after"]
    assert (["s1", "s2", "s3", "s4", "s5"], 3, 2) == (
        servers,
        placement["replicas"],
        placement["write_quorum"],
    )
    assert (3, sorted(servers)) == (len(holders), sorted(holders + after))
    assert [holders[2], holders[1]] == report["stopped"]
    assert {"alice": 1, "bob": 1} == report["acked"]["one_holder_down"]
    assert {"carol": 1} == report["acked"]["two_holders_down"]
    hint = report["hint"]
    assert hint["taker"] in after and hint["handing"] > 0
    assert (True, True) == (hint["acked"], hint["handed_back"])
    split = report["partition"]
    assert ["b0", holders[0], after[0], "alice"] == split["groups"][0]
    assert {"alice": 3, "bob": 3} == split["acked"]
    assert (after[0], True) == (split["hint_taker"], split["handing"][after[0]] > 0)
    assert report["converged"] and report["error"] is None
    assert dict.fromkeys(servers, 0) == report["handing"]
    assert [] == report["copies_at_non_holders"]
    replicas = report["replicas"]
    assert [*holders, "alice", "bob", "carol"] == [r["replica"] for r in replicas]
    assert 1 == len({r["digest"] for r in replicas})
    pids = report["pids"]
    assert {"b0", "b1", *servers, "alice", "bob", "carol"} == set(pids)
    assert [2, 2] == [len(pids[s]) for s in report["stopped"]]
    assert [] == report["running"]
    assert [] == [p for ps in pids.values() for p in ps if _running(p)]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state letter says so.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def test_cluster_up_serves_until_ctrl_c_and_then_stops_every_process(tmp_path: Path) -> None:
    """``cluster up`` prints its processes, answers ``cluster status``, and SIGINT stops
    it and all five children."""
    base = str(free_base_port())
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reference_cluster.cli.shoplist",
            "cluster",
            "up",
            "--json",
            "--quiet",
            "--base-port",
            base,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli_env(tmp_path),
    )
    try:
        started = json.loads(first_line(up, timeout=30))  # once every broker sees 3 servers
        pids = sorted(started["pids"].values())
        status = run_cli(
            "cluster",
            "status",
            "--base-port",
            base,
            "--json",
            "--data-dir",
            str(tmp_path / "data"),
            home=tmp_path,
        )
        live = json.loads(status.stdout)["brokers"]
        up.send_signal(signal.SIGINT)
        assert 0 == up.wait(timeout=30)
    finally:
        stop_process(up)
    assert [["s1", "s2", "s3"]] * 2 == [b["servers"] for b in live.values()]
    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (5, []) == (len(pids), [p for p in pids if _running(p)])


def _one_line_error(run: subprocess.CompletedProcess[str], status: int) -> str:
    """The single error line of a failed command (and check its shape)."""
    lines = run.stderr.strip().splitlines()
    assert (status, 1, False, "") == (
        run.returncode,
        len(lines),
        "Traceback" in run.stderr,
        run.stdout,
    ), run.stderr
    assert re.match(r"shoplist( [a-z-]+)*: error: ", lines[0]), lines
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["--broker", "127.0.0.1:7100"], None),
        (["--broker", "localhost:7100"], None),
        (["--broker", "nonsense"], None),
        ([], {"SHOPLIST_BROKERS": "nonsense"}),
        (["--broker", "tcp://127.0.0.1:99999"], None),
    ],
)
def test_a_bad_broker_address_is_one_line_not_a_hang(
    tmp_path: Path, flags: list[str], env: dict[str, str] | None
) -> None:
    """Before: ``connect()`` raised inside the client, the socket was never closed and
    the command hung for ever in ``term()``. Now the address is checked before anything
    runs: one line, nothing created on the device."""
    for command in (["lists"], ["create", "Weekend"], ["cluster", "status"]):
        run = run_cli("--user", "ann", *command, *flags, home=tmp_path, timeout=20, env=env)
        line = _one_line_error(run, 1 if env else 2)
        assert "tcp://" in line, line
    assert [] == list(tmp_path.iterdir())


def test_without_pyzmq_the_command_names_the_extra_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['zmq'] = None\n"
        "from reference_cluster.cli import main\n"
        "sys.exit(main(['--help']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(tmp_path),
        check=False,
    )
    assert "pip install 'dotted-crdts[cluster]'" in _one_line_error(run, 1)


def test_flag_and_environment_mistakes_are_one_line(tmp_path: Path) -> None:
    """--home naming a file, a bad SHOPLIST_TIMEOUT, a password the server would refuse
    anyway (checked before any network, with the server's own rule), a port out of range."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    home = tmp_path / "device"
    runs = {
        "home": run_cli("--home", str(a_file), "lists", home=home),
        "timeout": run_cli("lists", home=home, env={"SHOPLIST_TIMEOUT": "xyz"}),
        "empty": run_cli("signup", "ann", "--password-stdin", home=home, stdin="\n"),
        "short": run_cli("signup", "ann", "--password-stdin", home=home, stdin="x\n"),
        "port": run_cli("cluster", "up", "--base-port", "99999", home=home),
    }
    lines = {k: _one_line_error(r, 2 if k == "port" else 1) for k, r in runs.items()}
    assert "is a file" in lines["home"]
    assert lines["timeout"].startswith("shoplist: error: SHOPLIST_TIMEOUT")
    assert "at least 8 characters, got 0" in lines["empty"]
    assert "at least 8 characters, got 1" in lines["short"]
    assert "65535" in lines["port"]
    assert not home.exists() or not list(home.glob("*.sqlite"))


def test_version(tmp_path: Path) -> None:
    run = run_cli("--version", home=tmp_path)
    assert (0, "") == (run.returncode, run.stderr)
    assert re.fullmatch(r"shoplist \d+\.\d+\.\d+\S*\n", run.stdout), run.stdout
