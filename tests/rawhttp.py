"""A raw HTTP/1.1 connection for tests that speak to a real server byte by byte (slow heads,
oversized heads, pipelining, bodies cut off mid-way)."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterable

from servers import Server


class Raw:
    """One TCP connection to the server, spoken to byte by byte."""

    def __init__(self, server: Server, opened: list[socket.socket]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        opened.append(self.sock)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_until_answered(self, pieces: Iterable[bytes]) -> int:
        """Send pieces until the server answers or hangs up; return the bytes sent."""
        sent = 0
        for piece in pieces:
            try:
                self.sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            if select.select([self.sock], [], [], 0.02)[0]:
                break
        return sent

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a whole response: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed in the middle of a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def is_closed(self, within: float) -> bool:
        self.sock.settimeout(within)
        try:
            return not self._fill()
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
