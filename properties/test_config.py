"""The processes' shared configuration: duration flags and the command lines of children."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.processes import agent, broker, server
from reference_cluster.processes.config import (
    Timing,
    add_seconds_flag,
    broker_argv,
    parse_seconds,
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
    timing = Timing(heartbeat=0.2, anti_entropy=0.7, liveness=1.5, zmq_heartbeat=0.0)
    argv = server_argv(
        "s2",
        store=Path("/data/s2.sqlite"),
        bind="tcp://127.0.0.1:7202",
        brokers=["tcp://127.0.0.1:7101", "tcp://127.0.0.1:7111"],
        peers={"s1": "tcp://127.0.0.1:7201", "s3": "tcp://127.0.0.1:7203"},
        timing=timing,
        log_level="WARNING",
    )
    assert [sys.executable, "-m", "reference_cluster.processes.server"] == argv[:3]
    settings = server.settings_from_args(server._parser().parse_args(argv[3:]))
    assert (
        "s2",
        Path("/data/s2.sqlite"),
        "tcp://127.0.0.1:7202",
        ("tcp://127.0.0.1:7101", "tcp://127.0.0.1:7111"),
        (("s1", "tcp://127.0.0.1:7201"), ("s3", "tcp://127.0.0.1:7203")),
        (0.2, 0.7, 0.0),
    ) == (
        settings.server_id,
        settings.store,
        settings.bind,
        settings.brokers,
        settings.peers,
        (
            settings.config.heartbeat_interval,
            settings.config.anti_entropy_interval,
            settings.heartbeat,
        ),
    )
    args = broker._parser().parse_args(
        broker_argv(
            "b1",
            frontend="tcp://127.0.0.1:7110",
            backend="tcp://127.0.0.1:7111",
            timing=timing,
            log_level="ERROR",
            python="py",
        )[3:]
    )
    assert ("b1", "tcp://127.0.0.1:7110", "tcp://127.0.0.1:7111", 1.5, "ERROR", True) == (
        args.id,
        args.frontend,
        args.backend,
        args.liveness,
        args.log_level,
        args.watch_parent,
    )


def test_tuned_sockets_refuse_frames_larger_than_a_message() -> None:
    """Every socket of the cluster caps a frame at the largest message a peer accepts."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        tune_socket(sock, heartbeat=1.0)
        assert MAX_MESSAGE_BYTES == sock.getsockopt(zmq.MAXMSGSIZE)
    finally:
        ctx.destroy(linger=0)
