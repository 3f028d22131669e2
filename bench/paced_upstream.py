#!/usr/bin/env python3
"""A small HTTP/1.1 JSON-RPC upstream for bench/soak.sh: a threaded
http.server (the kind of upstream that found issue 11's keep-alive desync)
answering every POST with an empty result carrying the request's id.

The path sets the pace: /instant, /1ms, /jitter (0-5 ms at random) and /sse
(the result as one event of a chunked text/event-stream, after ~1 ms).

    python3 bench/paced_upstream.py PORT
"""
import json
import os
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Paced(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            rpc_id = json.loads(body).get("id")
        except ValueError:
            rpc_id = None
        pace = self.path.rstrip("/").rsplit("/", 1)[-1]
        delay = {"instant": 0, "jitter": random.uniform(0, 0.005)}.get(pace, 0.001)
        if delay:
            time.sleep(delay)
        result = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": {}}).encode()
        self.send_response(200)
        if pace == "sse":
            event = b"event: message\ndata: " + result + b"\n\n"
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
        else:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(result)))
            self.end_headers()
            self.wfile.write(result)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = int(os.environ.get("BACKLOG", "256"))

    def handle_error(self, request, client_address):
        # A client (the gateway) that goes away mid-request is normal at the
        # end of a run, when wrk closes its connections with calls in flight.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Paced).serve_forever()
