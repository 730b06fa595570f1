"""``shoplist cluster up --servers M --replicas N``: the flags and their mistakes, the keys
of M servers, the command lines ``LocalCluster`` gives its children, the membership that
``cluster up`` records and ``cluster status`` shows, and one real cluster of 5 servers
that keeps a list on exactly its 3 holders, with brokers that route to those only.

Every process a test starts is stopped by the test (by pid), also when it fails; every
wait polls with a deadline; the network is 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_harness import cli_env, first_line, run_cli
from cluster_harness import PASSWORD, poll

from reference_cluster.cli.cluster import (
    MEMBERSHIP_FILE,
    _status_membership,
    membership_text,
    read_membership,
    record_membership,
    status_report,
)
from reference_cluster.cli.membership import Record, read_record
from reference_cluster.cli.shoplist import _build_parser, main
from reference_cluster.cores.client import ClientConfig
from reference_cluster.processes import broker, server
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, free_base_port, probe, stop_process
from reference_cluster.processes.config import LocalLayout
from reference_cluster.processes.security import Operator, client_keys
from reference_cluster.protocol.messages import (
    BrokerStatus,
    ErrorReply,
    ServerStatus,
    Status,
    SyncReply,
    SyncRequest,
)
from reference_cluster.protocol.placement import Membership, holders
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore

FIVE = [f"s{j}" for j in range(1, 6)]
DIGEST = "ab" * 32


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SHOPLIST_ setting from the caller's environment."""
    for name in list(os.environ):
        if name.startswith("SHOPLIST_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _outcome(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[Any, list[str]]:
    """The exit status of ``shoplist ARGV`` run in process, and its standard error lines."""
    try:
        status: Any = main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err.strip().splitlines()


# -- flags --------------------------------------------------------------------------------


def test_up_takes_servers_and_replicas_from_flags_or_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Default 3 and 3; the flags set them; SHOPLIST_SERVERS and SHOPLIST_REPLICAS set the
    defaults, which the flags override; ``keys`` takes --servers; ``status`` leaves both
    unset unless given (it reads the record first)."""

    def parsed(*argv: str) -> tuple[Any, ...]:
        args = _build_parser().parse_args(["cluster", *argv])
        return args.servers, getattr(args, "replicas", "-")

    before = [
        parsed("up"),
        parsed("up", "--servers", "16", "--replicas", "20"),
        parsed("keys", "--servers", "5"),
        parsed("status"),
        parsed("status", "--servers", "1", "--replicas", "1"),
    ]
    clean_env.setenv("SHOPLIST_SERVERS", "6")
    clean_env.setenv("SHOPLIST_REPLICAS", "2")
    after = [parsed("up"), parsed("up", "--servers", "4", "--replicas", "5"), parsed("keys")]
    assert [(3, 3), (16, 20), (5, "-"), (None, None), (1, 1)] == before
    assert [(6, 2), (4, 5), (6, "-")] == after


def test_up_help_names_the_variables_and_what_n_above_m_means(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("SHOPLIST_SERVERS", "6")
    with pytest.raises(SystemExit) as info:
        main(["cluster", "up", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (0, True, True, True) == (
        info.value.code,
        "(1 to 16; their peer ports are PORT+101..PORT+100+N) (SHOPLIST_SERVERS; default 6)"
        in text,
        "N may exceed the number of servers, and at least that many means every server "
        "holds every list (SHOPLIST_REPLICAS; default 3)" in text,
        "run 2 brokers and 3 servers (--servers)" in text,
    )


@pytest.mark.parametrize(
    ("argv", "env", "status", "says"),
    [
        (
            ["up", "--servers", "0"],
            {},
            2,
            "argument --servers: expected a number from 1 to 16, got 0",
        ),
        (
            ["up", "--servers", "17"],
            {},
            2,
            "argument --servers: expected a number from 1 to 16, got 17",
        ),
        (
            ["up", "--servers", "three"],
            {},
            2,
            "argument --servers: expected a whole number, got 'three'",
        ),
        (["up", "--servers", "9" * 60], {}, 2, "got 9999999999999999999999999999999999999..."),
        (["up", "--replicas", "0"], {}, 2, "argument --replicas: expected a number >= 1, got 0"),
        (["up", "--replicas", "-2"], {}, 2, "argument --replicas: expected a number >= 1, got -2"),
        (
            ["up", "--servers", "16", "--base-port", "65430"],
            {},
            2,
            "argument --base-port: with 16 servers, expected a base port from 1 to 65419 "
            "(the cluster uses PORT to PORT+116",
        ),
        (["status", "--servers", "17"], {}, 2, "argument --servers: expected a number from 1"),
        (["status", "--replicas", "x"], {}, 2, "argument --replicas: expected a whole number"),
        (["keys", "--servers", "0"], {}, 2, "argument --servers: expected a number from 1"),
        (["up"], {"SHOPLIST_SERVERS": "17"}, 1, "SHOPLIST_SERVERS: expected a number from 1 to 16"),
        (["up"], {"SHOPLIST_REPLICAS": "none"}, 1, "SHOPLIST_REPLICAS: expected a whole number"),
        (
            ["up", "--replicas", "3", "--write-quorum", "4"],
            {},
            2,
            "argument --write-quorum: the write quorum must be between 1 and the 3 servers",
        ),
        (["up", "--write-quorum", "0"], {}, 2, "argument --write-quorum: expected a number >= 1"),
        (
            ["up", "--servers", "2", "--replicas", "3"],
            {"SHOPLIST_WRITE_QUORUM": "3"},
            2,
            "argument --write-quorum: the write quorum must be between 1 and the 2 servers",
        ),
    ],
)
def test_bad_counts_are_one_line_errors_before_anything_starts(
    argv: list[str],
    env: dict[str, str],
    status: int,
    says: str,
    *,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad flag is a usage error (status 2), a bad variable one line naming it (status
    1, as for every SHOPLIST_ variable); either way nothing is made in the data folder."""
    for name, value in env.items():
        clean_env.setenv(name, value)
    data = tmp_path / "data"
    code, err = _outcome(["cluster", *argv, "--data-dir", str(data)], capsys)
    assert (status, 1, True, False) == (code, len(err), says in err[0], data.exists()), err


def test_a_base_port_too_high_for_the_servers_exits_2_from_a_real_process(
    tmp_path: Path,
) -> None:
    """The layout check runs after parsing, yet exits like a usage error: one line, status
    2, no traceback, no process started."""
    done = run_cli(
        "cluster",
        "up",
        "--servers",
        "12",
        "--base-port",
        "65425",
        "--data-dir",
        str(tmp_path / "data"),
        home=tmp_path,
    )
    err = done.stderr.strip().splitlines()
    assert (2, 1, "") == (done.returncode, len(err), done.stdout), done.stderr
    assert err[0].startswith("shoplist cluster up: error: argument --base-port: with 12 servers")
    assert not (tmp_path / "data").exists()


def test_cluster_keys_makes_the_keys_of_every_server(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cluster keys --servers 5`` makes b0, b1, s1..s5 and admin; run again with 6 it
    makes only s6."""
    data = tmp_path / "data"
    first = main(["--json", "cluster", "keys", "--servers", "5", "--data-dir", str(data)])
    made = json.loads(capsys.readouterr().out)["made"]
    again = main(["--json", "cluster", "keys", "--servers", "6", "--data-dir", str(data)])
    more = json.loads(capsys.readouterr().out)["made"]
    names = sorted(p.stem for p in (data / "keys" / "members").glob("*.key"))
    assert (0, 0, ["s6"]) == (first, again, more)
    assert {"b0", "b1", "admin", *FIVE} <= set(made)
    assert sorted(["admin", "b0", "b1", *FIVE, "s6"]) == names


# -- the children's command lines ---------------------------------------------------------


def test_local_cluster_gives_every_child_the_members_and_replicas(tmp_path: Path) -> None:
    """Brokers get every server as ``--member`` and ``--replicas N``; servers get
    ``--replicas N`` and every other server as a peer. The defaults are today's: 3
    servers, 3 replicas. A replica count below 1 is refused."""

    def children(cluster: LocalCluster, j: int) -> tuple[Any, ...]:
        b = broker._parser().parse_args(cluster._broker_argv(1)[3:])
        s = server.settings_from_args(server._parser().parse_args(cluster._server_argv(j)[3:]))
        return b.member, b.replicas, s.server_id, s.replicas, [p for p, _ in s.peers]

    five = LocalLayout("127.0.0.1", 30000, servers=5)
    with LocalCluster(tmp_path, layout=five, replicas=2, insecure=True) as c5:
        assert (FIVE, 2, "s4", 2, ["s1", "s2", "s3", "s5"]) == children(c5, 3)
        assert (Membership(FIVE), 2) == (c5.membership, c5.replicas)
    with LocalCluster(tmp_path, layout=LocalLayout("127.0.0.1", 30000), insecure=True) as c3:
        assert (["s1", "s2", "s3"], 3, "s1", 3, ["s2", "s3"]) == children(c3, 0)
    with pytest.raises(ValueError, match="replicas must be at least 1, got 0"):
        LocalCluster(tmp_path, layout=five, replicas=0)
    with LocalCluster(tmp_path, layout=five, write_quorum=3, insecure=True) as w3:
        argv = w3._server_argv(0)[3:]
        assert 3 == server.settings_from_args(server._parser().parse_args(argv)).write_quorum
    with pytest.raises(ValueError, match="between 1 and the 3 servers"):
        LocalCluster(tmp_path, layout=five, replicas=3, write_quorum=4)


# -- the membership record and what status shows ------------------------------------------


def test_the_membership_record_round_trips(tmp_path: Path) -> None:
    """What ``cluster up`` records reads back as the same membership; the file is 0600;
    no file is None."""
    path = record_membership(tmp_path, ["s2", "s1", "s3", "s4", "s5"], 3)
    assert (tmp_path / MEMBERSHIP_FILE, 0o600) == (path, stat.S_IMODE(path.stat().st_mode))
    assert (Membership(FIVE, 0), 3) == read_membership(path)
    assert None is read_membership(tmp_path / "none.json")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"nope", "not JSON"),
        (b"[]", "not an object"),
        (b"[" * 200_000, "larger than 64 KiB"),
        (b"[" * 50_000, "not JSON"),
        (b'{"servers": ["s1", "s1"], "replicas": 3, "epoch": 0}', "servers must be distinct"),
        (b'{"servers": ["s1", "s17"], "replicas": 3, "epoch": 0}', "servers must be distinct"),
        (b'{"servers": ["s01"], "replicas": 3, "epoch": 0}', "servers must be distinct"),
        (b'{"servers": [], "replicas": 3, "epoch": 0}', "servers must be distinct"),
        (
            b'{"servers": ["s1"], "left": ["s1"], "replicas": 3, "epoch": 0}',
            "servers must be distinct",
        ),
        (b'{"servers": ["s1"], "left": 3, "replicas": 3, "epoch": 0}', "servers must be distinct"),
        (b'{"servers": ["s1"], "replicas": 0, "epoch": 0}', "replicas must be"),
        (b'{"servers": ["s1"], "replicas": true, "epoch": 0}', "replicas must be"),
        (b'{"servers": ["s1"], "replicas": 1, "epoch": -1}', "epoch must be"),
        (b'{"servers": ["s1"], "replicas": 1}', "epoch must be"),
    ],
)
def test_a_bad_membership_record_is_one_line_naming_it(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / MEMBERSHIP_FILE
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_membership(path)
    expected = f"{path} is not a membership recorded by cluster up ({why}"
    assert (True, 1) == (str(info.value).startswith(expected), len(str(info.value).splitlines()))


def test_status_takes_each_flag_else_the_record_else_the_environment(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Each of --servers and --replicas: the flag, else what ``cluster up`` recorded, else
    SHOPLIST_SERVERS / SHOPLIST_REPLICAS, else 3."""

    def resolved(data: Path, *flags: str) -> tuple[list[str], int, int, Path | None]:
        args = _build_parser().parse_args(["cluster", "status", "--data-dir", str(data), *flags])
        members, replicas, recorded = _status_membership(args, data)
        return sorted(members.servers), replicas, members.epoch, recorded

    recorded = tmp_path / "up"
    recorded.mkdir()
    path = record_membership(recorded, FIVE, 2)
    empty = tmp_path / "empty"
    rows = [
        resolved(recorded),
        resolved(recorded, "--servers", "4"),
        resolved(recorded, "--servers", "4", "--replicas", "1"),
        resolved(empty),
    ]
    clean_env.setenv("SHOPLIST_SERVERS", "2")
    clean_env.setenv("SHOPLIST_REPLICAS", "1")
    rows += [resolved(empty), resolved(recorded)]
    assert [
        (FIVE, 2, 0, path),
        (FIVE[:4], 2, 0, path),
        (FIVE[:4], 1, 0, None),
        (FIVE[:3], 3, 0, None),
        (["s1", "s2"], 1, 0, None),
        (FIVE, 2, 0, path),
    ] == rows


def test_status_shows_the_membership_beside_the_answers() -> None:
    """The first line is the membership and its epoch; a broker that holds a server live
    that is not a member says so; JSON carries the same."""
    list_id = "7f1c3a52-44b8-4a4e-9d39-3c1f4f3b2a11"
    data, text = status_report(
        Membership(FIVE),
        3,
        Path("/data/membership.json"),
        [
            ("tcp://127.0.0.1:7100", BrokerStatus("r", "b0", ("s1", "s2", "s9"))),
            ("tcp://127.0.0.1:7110", None),
        ],
        [
            ("s1", "tcp://127.0.0.1:7201", ServerStatus("r", "s1", 2, {list_id: DIGEST})),
            ("s2", "tcp://127.0.0.1:7202", None),
            ("s6", "tcp://127.0.0.1:7206", ServerStatus("r", "s6", 0, {}, {}, 1, FIVE, 2)),
        ],
    )
    assert [
        "membership epoch 0: s1 s2 s3 s4 s5; each list on 3 of the 5 servers",
        "broker b0   tcp://127.0.0.1:7100     up    live servers: s1 s2 s9; not members: s9",
        "broker ?    tcp://127.0.0.1:7110     no answer",
        "server s1   tcp://127.0.0.1:7201     up    1 list, epoch 0, restarted 2 times",
        "server s2   tcp://127.0.0.1:7202     no answer",
        "server s6   tcp://127.0.0.1:7206     up    left, 0 lists, epoch 1, 2 to hand over, "
        "never restarted",
    ] == text.splitlines()
    assert {
        "membership": {
            "servers": FIVE,
            "replicas": 3,
            "epoch": 0,
            "recorded": "/data/membership.json",
        },
        "brokers": {
            "tcp://127.0.0.1:7100": {"id": "b0", "servers": ["s1", "s2", "s9"]},
            "tcp://127.0.0.1:7110": None,
        },
        "servers": {
            "s1": {"incarnation": 2, "lists": 1, "epoch": 0, "handing": 0},
            "s2": None,
            "s6": {"incarnation": 0, "lists": 0, "epoch": 1, "handing": 2},
        },
    } == data


def test_the_membership_line_says_when_every_server_holds_every_list() -> None:
    """N >= M is allowed: every server holds every list; servers sort s1, s2, ..., s10."""
    ten = Membership([f"s{j}" for j in range(1, 11)], 4)
    assert [
        "membership epoch 0: s1 s2 s3; every server holds every list (--replicas 5, 3 servers)",
        "membership epoch 0: s1; every server holds every list (--replicas 1, 1 server)",
        "membership epoch 4: s1 s2 s3 s4 s5 s6 s7 s8 s9 s10; each list on 3 of the 10 servers",
    ] == [
        membership_text(Membership(FIVE[:3]), 5),
        membership_text(Membership(["s1"]), 1),
        membership_text(ten, 3),
    ]


# -- a real cluster of 5 servers ----------------------------------------------------------


def _pull(endpoint: str, key: bytes, client: Client, list_id: str, attempt: int) -> Any:
    """Attempt ``attempt`` of a pull of ``list_id`` through the broker at ``endpoint``."""
    session = client.session
    assert session is not None
    request = SyncRequest(
        f"route.{attempt}.{endpoint[-5:]}",
        list_id,
        client.store.replica_id,
        attempt,
        None,
        None,
        session.token,
    )
    return probe(endpoint, request, timeout=2.0, secure=client_keys(key).dial_broker)


def _settled(reply: Any) -> Any:
    """A reply that will not change on a retry: a sync reply, or a ``not_holder``."""
    if isinstance(reply, SyncReply):
        return reply
    if isinstance(reply, ErrorReply) and reply.code == "not_holder":
        return reply
    return None


def _settled_pull(endpoint: str, key: bytes, client: Client, list_id: str, attempt: int) -> Any:
    """The settled reply to attempt ``attempt`` of a pull (polled: a holder that has not
    yet heard of the list's owner or of the session refuses for a moment)."""
    return poll(
        lambda: _settled(_pull(endpoint, key, client, list_id, attempt)),
        f"attempt {attempt} through {endpoint} settled",
        timeout=20.0,
        every=0.1,
    )


_SHOPLIST = (sys.executable, "-m", "reference_cluster.cli.shoplist")


def _cluster_up(home: Path, *flags: str) -> subprocess.Popen[bytes]:
    """``shoplist cluster up --json --quiet FLAGS`` as a child (anti-entropy every 0.5 s);
    the caller stops it by pid."""
    return subprocess.Popen(
        [*_SHOPLIST, "cluster", "up", "--json", "--quiet", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli_env(home, {"SHOPLIST_ANTI_ENTROPY": "0.5"}),
    )


@pytest.mark.timeout(150)
def test_cluster_up_with_5_servers_keeps_a_list_on_its_3_holders(tmp_path: Path) -> None:
    """``cluster up --servers 5 --replicas 3``: both brokers hold s1..s5 live; an edit
    through a client ends on exactly the list's 3 holders (the other 2 store nothing);
    every attempt of a request, through either broker, reaches a holder (a broker
    without members would send attempts 3 and 4 to the non-holders, which answer
    ``not_holder``); ``cluster status`` shows the membership; SIGINT stops all 7
    children."""
    base = str(free_base_port(servers=5))
    data = tmp_path / "data"
    up = _cluster_up(
        tmp_path, "--servers", "5", "--replicas", "3", "--base-port", base, "--data-dir", str(data)
    )
    client: Client | None = None
    try:
        started = json.loads(first_line(up, timeout=60))  # once both brokers hold all 5
        key = started["broker_key"].encode()
        store: ClientStore[ShoppingList] = ClientStore(tmp_path / "alice.sqlite", ShoppingList)
        client = Client(
            store, started["brokers"], broker_key=key, config=ClientConfig(request_timeout=2.0)
        )
        client.sign_up(f"alice-{os.getpid()}", PASSWORD)
        list_id = client.create("Weekend")
        client.edit(list_id, lambda s, r: s.add_item(r, "milk", 2))
        assert client.sync([list_id]).ok
        placed = set(holders(list_id, FIVE, 3))
        operator = Operator.from_keys(data / "keys")

        def keepers() -> set[str] | None:
            found = set()
            for j, name in enumerate(FIVE):
                reply = probe(
                    f"tcp://127.0.0.1:{int(base) + 101 + j}",
                    Status("t"),
                    timeout=1.0,
                    secure=operator.dialer(name, broker=False),
                )
                if not isinstance(reply, ServerStatus):
                    return None
                if list_id in reply.digests:
                    found.add(name)
            return found if found == placed else None

        poll(keepers, "the list on its 3 holders", timeout=30.0, every=0.1)
        replies = [
            _settled_pull(endpoint, key, client, list_id, attempt)
            for endpoint in started["brokers"]
            for attempt in range(6)
        ]
        status = run_cli(
            "cluster",
            "status",
            "--json",
            "--base-port",
            base,
            "--data-dir",
            str(data),
            home=tmp_path,
        )
        up.send_signal(signal.SIGINT)
        assert 0 == up.wait(timeout=30)
    finally:
        if client is not None:
            client.close()
        stop_process(up)
    assert started["membership"] == {
        "servers": FIVE,
        "replicas": 3,
        "epoch": 0,
        "recorded": str(data / MEMBERSHIP_FILE),
    }
    assert [type(r).__name__ for r in replies] == ["SyncReply"] * 12, replies
    shown = json.loads(status.stdout)
    assert shown["membership"] == started["membership"]
    assert [FIVE, FIVE] == [b["servers"] for b in shown["brokers"].values()]
    counts = {name: row["lists"] for name, row in shown["servers"].items()}
    assert {name: int(name in placed) for name in FIVE} == counts
    pids = list(started["pids"].values())
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (7, []) == (len(pids), [p for p in pids if _alive(p)])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_add_and_remove_server_rewrite_the_record_at_the_next_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``add-server`` adds the next unused id (never one that left) and makes its keys;
    ``remove-server`` moves a member to ``left``; each is the next epoch. Removing a
    stranger or the last member, or either verb without a recorded cluster, is one line,
    status 1."""
    data = tmp_path / "data"
    data.mkdir()
    nothing = main(["cluster", "add-server", "--data-dir", str(data)])
    missing = capsys.readouterr().err
    record_membership(data, ["s1", "s2", "s3"], 2)
    (data / "keys").mkdir()
    steps = [
        main(["--json", "cluster", "remove-server", "s3", "--data-dir", str(data)]),
        main(["--json", "cluster", "add-server", "--data-dir", str(data)]),
    ]
    said = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    bad = [
        main(["cluster", "remove-server", "s9", "--data-dir", str(data)]),
        main(["cluster", "remove-server", "s3", "--data-dir", str(data)]),
    ]
    errors = capsys.readouterr().err.splitlines()
    record = read_record(data / MEMBERSHIP_FILE)
    assert (1, True) == (nothing, "no cluster is recorded in" in missing)
    assert ([0, 0], [1, 1], 2) == (steps, bad, len(errors))
    assert [("s3", 1), ("s4", 2)] == [(d["server"], d["epoch"]) for d in said]
    assert Record(("s1", "s2", "s4"), 2, 2, ("s3",)) == record
    assert (data / "keys" / "members" / "s4.key").exists()
    assert "s9 is not a member (s1 s2 s4)" in errors[0]


@pytest.mark.timeout(180)
def test_cluster_up_follows_add_server_and_remove_server(tmp_path: Path) -> None:
    """A running ``cluster up --servers 3 --replicas 2``: ``cluster add-server`` starts
    s4 and makes it a member; ``cluster remove-server s1`` takes s1 out, and once it has
    handed its lists over ``cluster up`` stops it; ``cluster status`` shows epoch 2 and
    s2 s3 s4 answering. SIGINT then stops every child."""
    base = str(free_base_port(servers=4))
    data = tmp_path / "data"
    common = ["--base-port", base, "--data-dir", str(data)]
    up = _cluster_up(tmp_path, "--servers", "3", "--replicas", "2", *common)
    try:
        first_line(up, timeout=60)
        added = run_cli("cluster", "add-server", "--data-dir", str(data), home=tmp_path)
        removed = run_cli("cluster", "remove-server", "s1", "--data-dir", str(data), home=tmp_path)

        def settled() -> dict[str, Any] | None:
            done = run_cli("--json", "cluster", "status", *common, home=tmp_path)
            if done.returncode != 0:
                return None
            status = json.loads(done.stdout)
            servers = status["servers"]
            answering = sorted(k for k, v in servers.items() if v is not None)
            epochs = {v["epoch"] for v in servers.values() if v is not None}
            ok = answering == ["s2", "s3", "s4"] and epochs == {2}
            return status if ok else None

        status = poll(settled, "s1 gone, s2 s3 s4 at epoch 2", timeout=90.0, every=0.5)
    finally:
        up.send_signal(signal.SIGINT)
        code = stop_process(up)
    assert (0, 0, 0) == (added.returncode, removed.returncode, code), (added.stderr, removed.stderr)
    assert (["s2", "s3", "s4"], 2) == (
        sorted(status["membership"]["servers"]),
        status["membership"]["epoch"],
    )
