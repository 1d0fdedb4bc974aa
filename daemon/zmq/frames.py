"""Receiving one message with a bound on its frame count.

ZeroMQ bounds each frame (``MAXMSGSIZE``) but not how many frames a message has, and an empty
frame is 2 bytes on the wire. ``recv_multipart`` makes a Python object of every frame: one
2 MB message of a million empty frames cost the daemon 300 MiB and 18 s of its event loop.
Here frames are taken one at a time and those past the bound are discarded as they are read
(through a plain socket sharing the same ZeroMQ socket, with a yield now and then so other
clients are served meanwhile). What ZeroMQ itself buffered for such a message (about 64 bytes
a frame) is freed as it is read.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import zmq
import zmq.asyncio

# Frames discarded between two yields to the event loop.
DISCARD_BATCH = 10_000


class Receiver:
    def __init__(self, sock: zmq.asyncio.Socket, max_frames: int) -> None:
        self._sock = sock
        self._plain: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        self.max_frames = max_frames

    async def receive(self) -> tuple[list[zmq.Frame], int]:
        """One message: its first ``max_frames`` frames, and how many frames it had in all."""
        first: zmq.Frame = await self._sock.recv(copy=False)
        parts = [first]
        count = 1
        more = first.more
        while more:
            # A message is delivered whole: once its first frame is here, so are the others.
            try:
                frame = self._plain.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            count += 1
            more = frame.more
            if len(parts) < self.max_frames:
                parts.append(frame)
            elif count % DISCARD_BATCH == 0:
                await anyio.lowlevel.checkpoint()
        return parts, count
