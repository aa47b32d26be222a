"""A small Debug Adapter Protocol client (Content-Length framed JSON over TCP), as an IDE speaks it."""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class DapClient:
    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.seq = 0
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, command: str, **arguments: Any) -> int:
        self.seq += 1
        body = json.dumps({"seq": self.seq, "type": "request", "command": command, "arguments": arguments}).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self.seq

    def _read(self, deadline: float) -> dict[str, Any]:
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                length = int(head.split(b":", 1)[1])
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return json.loads(rest[:length])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no DAP message in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the debug adapter closed the connection")
            self.buffer += chunk

    def response(self, seq: int, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message["type"] == "event":
                self.events.append(message)
            elif message["type"] == "response" and message["request_seq"] == seq:
                assert message["success"], message
                return message.get("body") or {}

    def request(self, command: str, timeout: float = 30.0, **arguments: Any) -> dict[str, Any]:
        return self.response(self.send(command, **arguments), timeout)

    def event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event["event"] == name:
                    return self.events.pop(index).get("body") or {}
            message = self._read(deadline)
            if message["type"] == "event":
                self.events.append(message)
