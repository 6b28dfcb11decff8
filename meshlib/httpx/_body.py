"""Request bodies that can be sent more than once.

An in-memory body (``content=b"..."``) is replayable as is. A streaming body (a
generator, a file) is recorded as the first attempt sends it, up to ``limit`` bytes (as
Envoy buffers a request for retries up to its buffer limit); a retry replays the
recording, then continues from the source if the first attempt did not read it all. A
body larger than the limit is sent once and never retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx

__all__ = ["DEFAULT_RETRY_BUFFER", "RecordingStream", "replayable_body"]

#: Bytes of a streaming request body kept for retries (Envoy's default buffer limit).
DEFAULT_RETRY_BUFFER = 1 << 20


class RecordingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Wraps a streaming body; iterating again replays what was read so far."""

    def __init__(self, source: httpx.SyncByteStream | httpx.AsyncByteStream, limit: int) -> None:
        self._source = source
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._overflow = False
        self._done = False
        self._iter: Iterator[bytes] | None = None
        self._aiter: AsyncIterator[bytes] | None = None

    @property
    def replayable(self) -> bool:
        """False once more than ``limit`` bytes went out: a retry could not resend them."""
        return not self._overflow

    def _keep(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._overflow = True
            self._chunks.clear()
        else:
            self._chunks.append(chunk)

    def _replay(self) -> list[bytes]:
        if self._overflow:
            raise httpx.StreamConsumed()
        return list(self._chunks)

    def __iter__(self) -> Iterator[bytes]:
        yield from self._replay()
        if self._iter is None:
            if not isinstance(self._source, httpx.SyncByteStream):
                raise RuntimeError("an async request body cannot be sent by a sync transport")
            self._iter = iter(self._source)
        while not self._done:
            chunk = next(self._iter, None)
            if chunk is None:
                self._done = True
                break
            self._keep(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._replay():
            yield chunk
        if self._aiter is None:
            if not isinstance(self._source, httpx.AsyncByteStream):
                raise RuntimeError("a sync request body cannot be sent by an async transport")
            self._aiter = self._source.__aiter__()
        while not self._done:
            try:
                chunk = await self._aiter.__anext__()
            except StopAsyncIteration:
                self._done = True
                break
            self._keep(chunk)
            yield chunk

    def close(self) -> None:
        if isinstance(self._source, httpx.SyncByteStream):
            self._source.close()

    async def aclose(self) -> None:
        if isinstance(self._source, httpx.AsyncByteStream):
            await self._source.aclose()


def replayable_body(
    request: httpx.Request, limit: int
) -> httpx.SyncByteStream | httpx.AsyncByteStream | RecordingStream:
    """The stream to send for ``request``: as is when in memory, else recorded."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream) or limit <= 0:
        return stream
    return RecordingStream(stream, limit)
