"""Bare Tornado fan-out reference server (what a Tornado user writes by hand).

One WebSocket endpoint, one room, no auth, no validation, no persistence:

  client -> server  {"type":"bench-join"}                 join the room; reply {"type":"bench-joined"}
  client -> server  {"type":"bench-broadcast","data":{…}}  broadcast {"type":"bench-message","data":{…}}
                                                           to every socket in the room: json.dumps once,
                                                           then write_message per socket

Usage (normally started by bench/fanout.py, which also pins it to CPU 0):

  .venv/bin/python bench/bare_server.py --port 8765 [--cpu 0]
"""
import argparse
import json
import os
import sys

import tornado.ioloop
import tornado.web
import tornado.websocket

ROOM = set()
JOINED = '{"type":"bench-joined"}'


class BenchSocket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True

    def open(self):
        self.set_nodelay(True)

    def on_message(self, message):
        msg = json.loads(message)
        kind = msg.get("type")
        if kind == "bench-broadcast":
            payload = json.dumps({"type": "bench-message", "data": msg.get("data")})
            for ws in tuple(ROOM):
                try:
                    ws.write_message(payload)
                except tornado.websocket.WebSocketClosedError:
                    ROOM.discard(ws)
        elif kind == "bench-join":
            ROOM.add(self)
            self.write_message(JOINED)

    def on_close(self):
        ROOM.discard(self)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8765")))
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        import tornado.speedups  # noqa: F401  (C masking helper)
    except ImportError:
        print("bare_server: WARNING tornado.speedups missing (slow masking)", file=sys.stderr)
    app = tornado.web.Application([(r"/ws", BenchSocket)], websocket_compression_options=None)
    app.listen(args.port, address=args.host)
    print(f"bare_server: listening on ws://{args.host}:{args.port}/ws pid={os.getpid()} "
          f"cpus={sorted(os.sched_getaffinity(0))} tornado={tornado.version}", file=sys.stderr, flush=True)
    try:
        tornado.ioloop.IOLoop.current().start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
