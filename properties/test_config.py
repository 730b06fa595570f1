"""The processes' shared configuration: duration flags and the command lines of children."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.processes import agent, broker, server
from reference_cluster.processes.cluster import stop_process
from reference_cluster.processes.config import (
    LocalLayout,
    Timing,
    add_seconds_flag,
    broker_argv,
    check_endpoint,
    env_endpoints,
    local_layout,
    parse_base_port,
    parse_seconds,
    read_ready,
    server_argv,
    tune_socket,
)
from reference_cluster.protocol.messages import MAX_MESSAGE_BYTES


@given(st.floats(min_value=1e-6, max_value=1e6))
def test_parse_seconds_accepts_positive_numbers(value: float) -> None:
    """A positive finite number of seconds parses to itself."""
    assert value == parse_seconds(repr(value))


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "", "soon", "1e999"])
def test_parse_seconds_rejects_what_is_not_a_duration(text: str) -> None:
    """Zero, negatives, NaN, infinities and words are refused, naming what arrived."""
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_seconds(text)
    assert f"expected a number of seconds above 0, got {text!r}" == str(info.value)


def test_parse_seconds_zero_where_allowed() -> None:
    """Where zero means "off", zero passes and a negative still fails."""
    assert 0.0 == parse_seconds("0", zero_ok=True)
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape("0 or more, got '-0.5'")):
        parse_seconds("-0.5", zero_ok=True)


def _seconds_parser(monkeypatch: pytest.MonkeyPatch, env: str | None) -> argparse.ArgumentParser:
    if env is None:
        monkeypatch.delenv("SHOPLIST_TEST_WAIT", raising=False)
    else:
        monkeypatch.setenv("SHOPLIST_TEST_WAIT", env)
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_seconds_flag(parser, "--wait", "SHOPLIST_TEST_WAIT", 2.5, "wait")
    return parser


def test_seconds_flag_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable sets the default, the flag overrides it, and help shows the default."""
    assert 2.5 == _seconds_parser(monkeypatch, None).parse_args([]).wait
    parser = _seconds_parser(monkeypatch, "0.25")
    assert (0.25, 7.0) == (parser.parse_args([]).wait, parser.parse_args(["--wait", "7"]).wait)
    assert "(SHOPLIST_TEST_WAIT; default 0.25)" in " ".join(parser.format_help().split())


def test_seconds_flag_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value in the variable exits with a message naming the variable."""
    with pytest.raises(SystemExit) as info:
        _seconds_parser(monkeypatch, "-3")
    expected = "error: SHOPLIST_TEST_WAIT: expected a number of seconds above 0, got '-3'"
    assert expected == str(info.value.code)


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        (server, ["--heartbeat", "-1"]),
        (server, ["--anti-entropy", "nan"]),
        (broker, ["--liveness", "0"]),
        (agent, ["--store", "x.sqlite", "--request-timeout", "-1"]),
        (agent, ["--store", "x.sqlite", "--sync-interval", "inf"]),
    ],
)
def test_processes_refuse_bad_durations(
    module: object, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every process refuses a bad duration with a usage error (status 2), not a traceback."""
    with pytest.raises(SystemExit) as info:
        module.main(argv)  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert (2, True) == (info.value.code, "expected a number of seconds above 0" in err)


def test_child_command_lines_parse_back() -> None:
    """The command lines the cluster builds for its children mean what they were built from."""
    timing = Timing(
        heartbeat=0.2, anti_entropy=0.7, liveness=1.5, zmq_heartbeat=0.0, cache_lists=7
    )
    argv = server_argv(
        "s2",
        store=Path("/data/s2.sqlite"),
        bind="tcp://127.0.0.1:7202",
        brokers={"b0": "tcp://127.0.0.1:7101", "b1": "tcp://127.0.0.1:7111"},
        peers={"s1": "tcp://127.0.0.1:7201", "s3": "tcp://127.0.0.1:7203"},
        timing=timing,
        log_level="WARNING",
        keys=Path("/data/keys"),
    )
    assert [sys.executable, "-m", "reference_cluster.processes.server"] == argv[:3]
    settings = server.settings_from_args(server._parser().parse_args(argv[3:]))
    assert (
        "s2",
        Path("/data/s2.sqlite"),
        "tcp://127.0.0.1:7202",
        (("b0", "tcp://127.0.0.1:7101"), ("b1", "tcp://127.0.0.1:7111")),
        (("s1", "tcp://127.0.0.1:7201"), ("s3", "tcp://127.0.0.1:7203")),
        Path("/data/keys"),
        (0.2, 0.7, 0.0, 7),
    ) == (
        settings.server_id,
        settings.store,
        settings.bind,
        settings.brokers,
        settings.peers,
        settings.keys,
        (
            settings.config.heartbeat_interval,
            settings.config.anti_entropy_interval,
            settings.heartbeat,
            settings.config.cache_lists,
        ),
    )
    args = broker._parser().parse_args(
        broker_argv(
            "b1",
            frontend="tcp://127.0.0.1:7110",
            backend="tcp://127.0.0.1:7111",
            timing=timing,
            log_level="ERROR",
            keys=None,
            python="py",
        )[3:]
    )
    assert ("b1", "tcp://127.0.0.1:7110", "tcp://127.0.0.1:7111", 1.5, "ERROR", True, True) == (
        args.id,
        args.frontend,
        args.backend,
        args.liveness,
        args.log_level,
        args.watch_parent,
        args.insecure,
    )


def test_a_server_without_peers_dials_none() -> None:
    """A server built with no peers (a one-server cluster) does not fall back to the
    local layout's other servers."""
    argv = server_argv(
        "s1",
        store=Path("/data/s1.sqlite"),
        bind="tcp://127.0.0.1:7201",
        brokers={"b0": "tcp://127.0.0.1:7101"},
        peers={},
        timing=Timing(),
        log_level="WARNING",
        keys=None,
    )
    settings = server.settings_from_args(server._parser().parse_args(argv[3:]))
    assert ((), 1000) == (settings.peers, settings.config.cache_lists)


def test_tuned_sockets_refuse_frames_larger_than_a_message() -> None:
    """Every socket of the cluster caps a frame at the largest message a peer accepts."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        tune_socket(sock, heartbeat=1.0)
        assert MAX_MESSAGE_BYTES == sock.getsockopt(zmq.MAXMSGSIZE)
    finally:
        ctx.destroy(linger=0)


# -- endpoints and the local layout -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("tcp://127.0.0.1:7100", False),
        ("tcp://localhost:1", False),
        ("tcp://shop-1.example.org:65535", False),
        ("tcp://[::1]:7100", False),
        ("tcp://127.0.0.2:0;127.0.0.3:7100", False),
        ("tcp://127.0.0.2:*;127.0.0.3:7100", False),
        ("ipc:///tmp/shoplist.sock", False),
        ("inproc://brokers", False),
        ("tcp://*:7100", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://eth0:7100", True),
        ("ipc://*", True),
    ],
)
def test_check_endpoint_accepts_zeromq_endpoints(text: str, bind: bool) -> None:
    """TCP (also from a source address), IPC and in-process endpoints pass unchanged;
    wildcards pass where they are bound."""
    assert text == check_endpoint(text, bind=bind)


@pytest.mark.parametrize(
    ("text", "bind", "expected"),
    [
        (
            "127.0.0.1:7100",
            False,
            "expected a ZeroMQ endpoint such as tcp://127.0.0.1:7100, got '127.0.0.1:7100' "
            "(did you mean tcp://127.0.0.1:7100?)",
        ),
        (
            "localhost:7100",
            False,
            "expected a ZeroMQ endpoint such as tcp://127.0.0.1:7100, got 'localhost:7100' "
            "(did you mean tcp://localhost:7100?)",
        ),
        (
            "nonsense",
            False,
            "expected a ZeroMQ endpoint such as tcp://127.0.0.1:7100, got 'nonsense'",
        ),
        (
            "http://x:1",
            False,
            "expected a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or inproc://NAME), "
            "got 'http://x:1'",
        ),
        (
            "tcp://127.0.0.1:99999",
            False,
            "expected a port from 1 to 65535 in a ZeroMQ endpoint, got 'tcp://127.0.0.1:99999'",
        ),
        (
            "tcp://127.0.0.1:0",
            False,
            "expected a port from 1 to 65535 in a ZeroMQ endpoint, got 'tcp://127.0.0.1:0'",
        ),
        (
            "tcp://127.0.0.1",
            False,
            "expected a port from 1 to 65535 in a ZeroMQ endpoint, got 'tcp://127.0.0.1'",
        ),
        (
            "tcp://127.0.0.1:*",
            False,
            "expected a port from 1 to 65535 in a ZeroMQ endpoint, got 'tcp://127.0.0.1:*' "
            "('*' picks a free port, which only a process that binds can do)",
        ),
        (
            "tcp://*:7100",
            False,
            "expected a host to connect to, got 'tcp://*:7100' ('*' means every interface, "
            "which only a process that binds can use; try tcp://127.0.0.1:7100)",
        ),
        (
            "tcp://bad host:1",
            False,
            "expected a host name or address in a ZeroMQ endpoint, got 'tcp://bad host:1'",
        ),
        (
            "tcp://300.1.1.1:7100",
            False,
            "expected a host name or address in a ZeroMQ endpoint, got 'tcp://300.1.1.1:7100'",
        ),
        (
            "tcp://127.0.0.2:0;127.0.0.3:7100",
            True,
            "expected an endpoint to bind, got 'tcp://127.0.0.2:0;127.0.0.3:7100' "
            "(a source address, SRC;HOST:PORT, is for connecting)",
        ),
        ("ipc://", False, "expected ipc://PATH, got 'ipc://'"),
        ("ipc://*", False, "expected ipc://PATH, got 'ipc://*' ('*' is for binding)"),
        ("inproc://", False, "expected inproc://NAME, got 'inproc://'"),
    ],
)
def test_check_endpoint_refuses_what_zeromq_would_refuse_or_misread(
    text: str, bind: bool, expected: str
) -> None:
    """A missing scheme, a port out of range, a wildcard where one connects, a bad host:
    each is one line saying what was expected and what arrived."""
    with pytest.raises(argparse.ArgumentTypeError) as info:
        check_endpoint(text, bind=bind)
    assert expected == str(info.value)


def test_env_endpoints_reads_and_checks_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset: the default; set: its endpoints in order, spaces and empty parts dropped."""
    monkeypatch.delenv("SHOPLIST_TEST_EPS", raising=False)
    assert ["tcp://127.0.0.1:1"] == env_endpoints("SHOPLIST_TEST_EPS", ["tcp://127.0.0.1:1"])
    monkeypatch.setenv("SHOPLIST_TEST_EPS", " tcp://127.0.0.1:7100 ,, tcp://10.0.0.5:7110")
    assert ["tcp://127.0.0.1:7100", "tcp://10.0.0.5:7110"] == env_endpoints("SHOPLIST_TEST_EPS", [])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "tcp://127.0.0.1:7100,127.0.0.1:7110",
            "SHOPLIST_TEST_EPS: expected a ZeroMQ endpoint such as tcp://127.0.0.1:7100, "
            "got '127.0.0.1:7110' (did you mean tcp://127.0.0.1:7110?)",
        ),
        (" , ", "SHOPLIST_TEST_EPS: expected ZeroMQ endpoints separated by commas, got ' , '"),
    ],
)
def test_env_endpoints_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: str
) -> None:
    """A bad endpoint in the variable is a ValueError whose one line names the variable."""
    monkeypatch.setenv("SHOPLIST_TEST_EPS", raw)
    with pytest.raises(ValueError) as info:
        env_endpoints("SHOPLIST_TEST_EPS", [])
    assert expected == str(info.value)


def test_layout_ports_span_and_limits() -> None:
    """The layout uses base .. base+103 (2 brokers, 3 servers); a base that puts any of
    them outside 1..65535 is refused."""
    layout = LocalLayout("127.0.0.1", 65432)
    assert [65432, 65433, 65442, 65443, 65533, 65534, 65535] == layout.ports
    for base in (0, 65433, 99999):
        with pytest.raises(ValueError, match=f"base port {base} "):
            LocalLayout("127.0.0.1", base)


@pytest.mark.parametrize("text", ["99999", "65433", "0", "-5", "7100.5", "port"])
def test_parse_base_port_refuses_ports_the_layout_cannot_use(text: str) -> None:
    """A base port is a whole number that keeps every port of the layout in 1..65535."""
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_base_port(text)
    expected = (
        "expected a base port from 1 to 65432 (the cluster uses PORT to PORT+103; "
        f"ports end at 65535), got {text!r}"
    )
    assert expected == str(info.value)
    assert 65432 == parse_base_port("65432")


def test_local_layout_bad_base_port_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHOPLIST_BASE_PORT out of range exits with one line naming the variable."""
    monkeypatch.setenv("SHOPLIST_BASE_PORT", "99999")
    with pytest.raises(SystemExit) as info:
        local_layout()
    assert str(info.value.code).startswith("error: SHOPLIST_BASE_PORT: expected a base port")


@pytest.mark.parametrize(("module", "flag"), [(broker, "--frontend"), (server, "--bind")])
def test_processes_refuse_bad_endpoints(
    module: object, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker or server given an endpoint without its scheme stops with a usage error."""
    with pytest.raises(SystemExit) as info:
        module.main([flag, "127.0.0.1:7100"])  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert (2, True) == (info.value.code, "did you mean tcp://127.0.0.1:7100?" in err)


@pytest.mark.timeout(30)
def test_read_ready_names_the_exit_status_of_a_process_that_exits_first() -> None:
    """A child that exits before its ready line is reported as exited with its status,
    at once, never as "not ready within" the whole timeout."""
    script = "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"
    for _ in range(5):  # the exit races the end of its output: try it a few times
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            started = time.monotonic()
            with pytest.raises(RuntimeError) as info:
                read_ready(proc, timeout=20.0)
            elapsed = time.monotonic() - started
        finally:
            stop_process(proc)
        assert (f"pid {proc.pid} exited with status 3 before it was ready", True) == (
            str(info.value),
            elapsed < 10.0,
        )


def test_replicas_and_members_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server takes ``--replicas`` (default 3, or SHOPLIST_REPLICAS); a broker takes
    ``--replicas`` and its members from ``--member`` (or SHOPLIST_MEMBERS)."""
    monkeypatch.delenv("SHOPLIST_REPLICAS", raising=False)
    monkeypatch.delenv("SHOPLIST_MEMBERS", raising=False)
    base = ["--id", "s1", "--insecure", "--no-peers", "--bind", "tcp://127.0.0.1:7201"]
    default = server.settings_from_args(server._parser().parse_args(base))
    given_ = server.settings_from_args(server._parser().parse_args([*base, "--replicas", "2"]))
    monkeypatch.setenv("SHOPLIST_REPLICAS", "5")
    from_env = server.settings_from_args(server._parser().parse_args(base))
    args = broker._parser().parse_args(["--member", "s1", "--member", "s2", "--replicas", "2"])
    assert (3, 2, 5, ["s1", "s2"], 2) == (
        default.replicas,
        given_.replicas,
        from_env.replicas,
        args.member,
        args.replicas,
    )
