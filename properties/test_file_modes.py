"""Store files (a server's lists and accounts, a device's session token) and SQLite's
``-wal`` and ``-shm`` files beside them are readable by their owner only (0600), also when
they existed looser before; the folders the program creates for them are 0700."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdts import AWORSet
from reference_cluster.cli.shoplist import main as shoplist
from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port
from reference_cluster.processes.config import LocalLayout
from reference_cluster.storage.client_store import ClientSession, ClientStore
from reference_cluster.storage.server_store import ServerStore
from reference_cluster.storage.sqlite import make_private_folder

LIST_A = str(uuid.UUID(int=1))
SIDE = ("", "-wal", "-shm")


def mode(path: Path | str) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(os.stat(path).st_mode)


def modes(path: Path) -> dict[str, int]:
    """The permission bits of a store file and of its ``-wal`` and ``-shm`` files."""
    return {suffix or "db": mode(f"{path}{suffix}") for suffix in SIDE}


PRIVATE = {"db": 0o600, "-wal": 0o600, "-shm": 0o600}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Run with umask 022 (files 0644 unless the program says otherwise)."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def test_a_new_server_store_and_its_wal_are_private(tmp_path: Path, loose_umask: None) -> None:
    """A server store, its -wal and its -shm are created 0600."""
    path = tmp_path / "s1.sqlite"
    with ServerStore(path, AWORSet) as store:
        store.apply_delta(LIST_A, AWORSet().add("r", 1))
        assert PRIVATE == modes(path)


def test_a_new_device_store_holding_the_token_is_private(tmp_path: Path, loose_umask: None) -> None:
    """The device store, which holds the session token in clear, is created 0600 with its
    -wal and -shm."""
    path = tmp_path / "alice.sqlite"
    with ClientStore(path, AWORSet) as store:
        store.set_session(ClientSession("alice", "u-1", "secret-token", 1e12))
        assert PRIVATE == modes(path)


@pytest.mark.parametrize("kind", [ServerStore, ClientStore])
def test_looser_existing_files_are_tightened_on_open(
    tmp_path: Path, kind: type[ServerStore[AWORSet]] | type[ClientStore[AWORSet]]
) -> None:
    """A store file, -wal and -shm made 0644 (by an older version, a copy, a restore) are
    0600 once the store is opened again."""
    path = tmp_path / "old.sqlite"
    with kind(path, AWORSet):
        for suffix in SIDE:
            os.chmod(f"{path}{suffix}", 0o644)
        assert dict.fromkeys(PRIVATE, 0o644) == modes(path)
        with kind(path, AWORSet):
            assert PRIVATE == modes(path)


def test_made_folders_are_0700_and_existing_ones_are_left_alone(
    tmp_path: Path, loose_umask: None
) -> None:
    """make_private_folder makes every missing level 0700 and changes no folder that
    existed."""
    os.chmod(tmp_path, 0o755)
    deep = tmp_path / "a" / "b" / "c"
    make_private_folder(deep)
    make_private_folder(deep)  # again: nothing to do
    made = [mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(deep)]
    assert ([0o700] * 3, 0o755) == (made, mode(tmp_path))


def test_make_private_folder_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    """A file where a folder should be is a NotADirectoryError naming it."""
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="f is a file"):
        make_private_folder(tmp_path / "f" / "g")


def test_the_command_lines_home_and_device_store_are_private(
    tmp_path: Path, loose_umask: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shoplist`` creates $SHOPLIST_HOME 0700 and the device store 0600."""
    home = tmp_path / "home" / "shoplist"
    status = shoplist(["--home", str(home), "--user", "alice", "--offline", "logout"])
    capsys.readouterr()
    assert (0, 0o700, 0o700, 0o600) == (
        status,
        mode(home.parent),
        mode(home),
        mode(home / "alice.sqlite"),
    )


def test_a_running_servers_data_folder_and_store_are_private(
    tmp_path: Path, loose_umask: None
) -> None:
    """A cluster's data folder is 0700, and a running server's store, -wal and -shm 0600."""
    layout = LocalLayout("127.0.0.1", free_base_port(brokers=1, servers=2), brokers=1, servers=2)
    timing = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
    data = tmp_path / "cluster" / "data"
    with LocalCluster(data, layout=layout, timing=timing) as cluster:
        cluster.start()
        store = modes(data / "s1.sqlite")
    assert (0o700, 0o700, PRIVATE) == (mode(data.parent), mode(data), store)
