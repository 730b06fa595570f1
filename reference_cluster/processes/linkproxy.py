"""A TCP relay per network link, so a demo can cut and heal links without privileges.

Each link between two processes (client to broker, server to broker, server to server) can
be routed through a :class:`LinkProxy`: the connecting side dials the proxy's port, and the
proxy relays bytes to the real target. ``cut()`` drops every relayed connection and refuses
new ones (connections are accepted and closed at once), which the processes see as a
network partition: heartbeats stop, requests time out, ZeroMQ reconnects in the background.
``heal()`` lets connections through again.

This is a tool for demonstrations on machines where the test suite's network namespaces
(``ip netns`` + iptables, which need CAP_NET_ADMIN) are not available; no protocol code
knows about it. One thread per proxy multiplexes all its connections with ``selectors``.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading

__all__ = ["LinkProxy"]

log = logging.getLogger(__name__)
_CHUNK = 65536


class LinkProxy:
    """Relay ``listen_host:listen_port`` to ``target_host:target_port`` until closed.

    Args:
        target_port: where the real service listens.
        listen_port: the port to accept on (0 picks a free one; see :attr:`port`).
        host: the loopback (or other local) address for both ends.
    """

    def __init__(self, target_port: int, listen_port: int = 0, host: str = "127.0.0.1") -> None:
        self._target = (host, target_port)
        self._listener = socket.create_server((host, listen_port))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._peer: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._cut = False
        self._stop = False
        self.relayed = 0
        """Bytes relayed so far, both directions (for measuring traffic)."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(
            target=self._run, name=f"linkproxy:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        """Whether the link is currently cut."""
        return self._cut

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones until :meth:`heal`."""
        with self._lock:
            self._cut = True
        self._wake()

    def heal(self) -> None:
        """Let connections through again."""
        with self._lock:
            self._cut = False
        self._wake()

    def close(self) -> None:
        """Stop the relay thread and close every socket."""
        with self._lock:
            self._stop = True
        self._wake()
        self._thread.join(timeout=5)
        for s in (self._wake_r, self._wake_w):
            s.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already closed
            self._wake_w.send(b"x")

    def _drop_all(self) -> None:
        for s in list(self._peer):
            self._close_pair(s)

    def _close_pair(self, s: socket.socket) -> None:
        other = self._peer.pop(s, None)
        for sock in (s, other):
            if sock is None:
                continue
            self._peer.pop(sock, None)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
            sock.close()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._cut:
            conn.close()
            return
        try:
            upstream = socket.create_connection(self._target, timeout=2)
        except OSError as exc:
            log.debug("link proxy %s: target unreachable: %s", self.port, exc)
            conn.close()
            return
        for s in (conn, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peer[conn] = upstream
        self._peer[upstream] = conn
        self._sel.register(conn, selectors.EVENT_READ, "relay")
        self._sel.register(upstream, selectors.EVENT_READ, "relay")

    def _relay(self, s: socket.socket) -> None:
        other = self._peer.get(s)
        if other is None:
            return
        try:
            data = s.recv(_CHUNK)
            if data:
                self.relayed += len(data)
                other.setblocking(True)
                other.settimeout(2)
                other.sendall(data)
                other.setblocking(False)
                return
        except OSError:
            pass
        self._close_pair(s)

    def _run(self) -> None:
        try:
            while not self._stop:
                if self._cut and self._peer:
                    self._drop_all()
                for key, _ in self._sel.select(timeout=1.0):
                    if key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(64)
                    elif key.data is None:
                        self._accept()
                    else:
                        self._relay(key.fileobj)  # type: ignore[arg-type]
        finally:
            self._drop_all()
            self._sel.close()
            self._listener.close()
