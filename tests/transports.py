"""A fake socket transport for driving uvicorn protocols in process: what the server wrote, and
whether it paused reading or closed."""

from __future__ import annotations

import json
from typing import Any


class Transport:
    """The socket side of one connection: what the server wrote, whether it closed."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.read_paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name)

    def status(self) -> int:
        return int(self.written.split(b" ", 2)[1])

    def error(self) -> str:
        message: str = json.loads(self.written.partition(b"\r\n\r\n")[2])["error"]
        return message
