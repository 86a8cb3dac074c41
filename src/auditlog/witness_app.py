"""`auditlog witness`: a small witness server (c2sp.org/tlog-witness) with its own state file.

    POST /add-checkpoint              cosign a checkpoint consistent with the last one
    GET  /<sha256(origin)>/checkpoint the latest checkpoint cosigned for a log

A Falcon WSGI app served by the standard library's threaded WSGI server: a witness answers
one small request per log per publication interval, keeps its state in one file, and
must check and update that state atomically (one lock in one process does it), so it
needs neither gunicorn nor uvicorn, and runs wherever the `auditlog` package is installed.
TODO(ops): it speaks plain HTTP; put a TLS-terminating proxy in front of it on a network.
"""

from __future__ import annotations

import contextlib
import socketserver
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import falcon
import structlog

from auditlog.services.witness import WitnessReply, WitnessService

log = structlog.get_logger("auditlog.witness")

MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 10


def _answer(resp: falcon.Response, reply: WitnessReply) -> None:
    resp.status = reply.status
    resp.content_type = reply.content_type
    resp.text = reply.body


class AddCheckpointResource:
    def __init__(self, witness: WitnessService):
        self._witness = witness

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is None or length > MAX_BODY_BYTES:
            _answer(resp, WitnessReply(400, f"a body of at most {MAX_BODY_BYTES} bytes\n"))
            return
        _answer(resp, self._witness.add_checkpoint(req.bounded_stream.read(length)))


class LatestCheckpointResource:
    def __init__(self, witness: WitnessService):
        self._witness = witness

    def on_get(self, req: falcon.Request, resp: falcon.Response, origin_hash: str) -> None:
        _answer(resp, self._witness.latest(origin_hash))


def create_witness_app(witness: WitnessService) -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    app.add_route("/add-checkpoint", AddCheckpointResource(witness))
    app.add_route("/{origin_hash}/checkpoint", LatestCheckpointResource(witness))
    return app


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S  # a client that stalls cannot hold a thread for long

    def log_message(self, format: str, *args: Any) -> None:
        log.info("request", client=self.address_string(), line=format % args)


def serve(app: Any, host: str, port: int) -> None:
    """Serve until interrupted (SIGINT, or SIGTERM turned into KeyboardInterrupt)."""
    with make_server(host, port, app, server_class=_Server, handler_class=_Handler) as server:
        log.info("witness listening", address=host, port=server.server_port)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
