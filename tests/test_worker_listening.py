"""A worker's port listens before the worker registers: a request sent the moment it is routable waits."""

from __future__ import annotations

import socket
import threading

import uvicorn
from fastapi import FastAPI

from worker.inference.main import listening_socket


def test_a_connection_made_before_the_server_runs_is_answered_once_it_does() -> None:
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    # The heartbeat (and so routing) starts here, before uvicorn: a bound-only port would refuse this.
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"GET /ping HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")

    app = FastAPI()
    app.get("/ping")(lambda: {"pong": True})
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert reply.endswith(b'{"pong":true}')
