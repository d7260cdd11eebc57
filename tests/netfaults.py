"""A TCP proxy on 127.0.0.1 that can stall the path between a tower and a central while
both keep running, as a radio link that stops carrying packets does.

``block()`` stops moving bytes in both directions and stops accepting new connections,
but closes nothing: no FIN, no RST reaches either end, exactly like a black-holed route
(TCP holds what it cannot deliver). The ends notice only through their ZMTP heartbeats.
``unblock()`` lets whatever is still open flow again.
"""

from __future__ import annotations

import socket
import threading


class StallProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self.connections = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._acceptor.start()

    def _spawn(self, target, name: str, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            if not self._flowing.wait(0.05):
                continue  # a stalled path completes no new connection either
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=1.0)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(0.05)
            with self._lock:
                self._sockets += [client, upstream]
            self.connections += 1
            self._spawn(self._pump, "proxy-up", client, upstream)
            self._spawn(self._pump, "proxy-down", upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                if not self._flowing.wait(0.05):
                    continue
                try:
                    data = src.recv(65536)
                except (TimeoutError, socket.timeout):
                    continue
                if not data:
                    break
                while data and not self._stop.is_set():
                    self._flowing.wait()
                    try:
                        sent = dst.send(data)
                    except (TimeoutError, socket.timeout):
                        continue
                    data = data[sent:]
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def block(self) -> None:
        self._flowing.clear()

    def unblock(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._stop.set()
        self._flowing.set()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            threads, sockets = list(self._threads), list(self._sockets)
        for t in threads:
            t.join(5)
        for s in sockets:
            s.close()
