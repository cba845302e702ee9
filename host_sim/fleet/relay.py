# The network between a fleet shard's terminals and the broker: an asyncio TCP relay in the
# shard's own event loop (host_sim/netcut.py is the threaded one for single terminals). cut()
# drops every live connection at once and refuses new ones, as a store's uplink going down;
# restore() lets connections through again. Loopback only.
import asyncio

CHUNK = 65536


class Relay:
    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.up = True
        self.port = None
        self._server = None
        self._pairs = set()  # (client writer, broker writer)
        self.cuts = 0

    async def start(self):
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader, writer):
        if not self.up:
            writer.transport.abort()
            return
        try:
            b_reader, b_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, b_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pump(reader, b_writer), _pump(b_reader, writer))
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            b_writer.transport.abort()

    def cut(self):
        """Cable pulled: every connection dies now (no DISCONNECT: the broker sends the wills),
        new ones are refused until restore()."""
        self.up = False
        self.cuts += 1
        for client, broker in list(self._pairs):
            client.transport.abort()
            broker.transport.abort()
        self._pairs.clear()

    def restore(self):
        self.up = True

    def connections(self):
        return len(self._pairs)

    async def close(self):
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pump(reader, writer):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        writer.transport.abort()
