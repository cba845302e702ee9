"""A TCP relay between a terminal and the broker that can cut the terminal's network.

The terminal connects to the relay's port; the relay forwards bytes both ways to the broker.
`cut()` drops every live connection and refuses new ones (cable pulled); `blackhole()` keeps
connections open but silently discards traffic (a dead link only keepalives can detect);
`restore()` lets traffic flow again. Threads, loopback only, stops with `close()`.
"""
import select
import socket
import threading

UP, CUT, BLACKHOLE = "up", "cut", "blackhole"


class NetCut:
    def __init__(self, target_port, target_host="127.0.0.1", listen_port=0):
        self.target = (target_host, target_port)
        self.mode = UP
        self._lock = threading.Lock()
        self._conns = []
        self._closed = False
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", listen_port))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._closed:
            try:
                r, _, _ = select.select([self._srv], [], [], 0.2)
                if not r:
                    continue
                client, _ = self._srv.accept()
            except OSError:
                return
            if self.mode == CUT:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._conns.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair):
        client, upstream = pair
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed:
                r, _, _ = select.select(list(peers), [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if self.mode == UP:
                        peers[s].sendall(data)
        except OSError:
            pass
        finally:
            self._drop(pair)

    def _drop(self, pair):
        with self._lock:
            if pair in self._conns:
                self._conns.remove(pair)
        for s in pair:
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        self.mode = CUT
        with self._lock:
            pairs = list(self._conns)
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def blackhole(self):
        self.mode = BLACKHOLE

    def restore(self):
        self.mode = UP

    def close(self):
        self._closed = True
        self.cut()
        try:
            self._srv.close()
        except OSError:
            pass
