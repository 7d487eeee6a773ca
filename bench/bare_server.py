"""Bare Tornado reference server (what a Tornado user writes by hand).

One WebSocket endpoint, one room, no auth, no validation, no persistence:

  client -> server  {"type":"bench-join"}                 join the room; reply {"type":"bench-joined"}
  client -> server  {"type":"bench-broadcast","data":{…}}  broadcast {"type":"bench-message","data":{…}}
                                                           to every socket in the room: json.dumps once,
                                                           then write_message per socket
  client -> server  {"type":"bench-echo","id":…,"data":{…}}  reply {"type":"ack","id":…,"data":{…}}
                                                           (the round-trip reference)

``/ws/auth`` (the idle-sockets reference, bench/idle_sockets.py): the upgrade must carry
``Authorization: Bearer <JWT>``, an HS256 access token verified with PyJWT against the secret in
``BENCH_JWT_SECRET`` (signature, ``exp``, ``iss``, ``typ``), as a Tornado user would; a bad one is
refused with HTTP 401. The socket is then indexed by its user and gets
``{"type":"ready","data":{"userId":…}}``, and stays idle.

and one JSON GET, ``/api/bench/items`` (the authenticated-list reference): the success envelope
around 20 conversation-like items built at start-up, ``json.dumps`` per request.

Usage (normally started by bench/fanout.py, which also pins it to CPU 0):

  .venv/bin/python bench/bare_server.py --port 8765 [--cpu 0]
"""
import argparse
import datetime
import json
import os
import sys
import uuid

import jwt
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
        elif kind == "bench-echo":
            self.write_message(json.dumps({"type": "ack", "id": msg.get("id"), "data": msg.get("data")}))
        elif kind == "bench-join":
            ROOM.add(self)
            self.write_message(JOINED)

    def on_close(self):
        ROOM.discard(self)


JWT_SECRET = os.environ.get("BENCH_JWT_SECRET", "")
SOCKETS_BY_USER: dict = {}  # user id -> set of that user's open sockets


class AuthSocket(tornado.websocket.WebSocketHandler):
    """An authenticated socket the way a Tornado user writes one: verify the Bearer JWT before
    the upgrade, remember who it is, say ready."""

    user_id = None

    def check_origin(self, origin):
        return True

    def prepare(self):
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            claims = jwt.decode(token.strip(), JWT_SECRET, algorithms=["HS256"], issuer="vachat",
                                options={"require": ["exp", "iat", "sub", "typ", "sid", "jti", "iss"]})
            if claims["typ"] != "access":
                raise jwt.InvalidTokenError("not an access token")
        except jwt.InvalidTokenError:
            raise tornado.web.HTTPError(401)
        self.user_id = claims["sub"]

    def open(self):
        self.set_nodelay(True)
        SOCKETS_BY_USER.setdefault(self.user_id, set()).add(self)
        self.write_message(json.dumps({"type": "ready", "data": {"userId": self.user_id}}))

    def on_message(self, message):
        pass

    def on_close(self):
        sockets = SOCKETS_BY_USER.get(self.user_id)
        if sockets is not None:
            sockets.discard(self)
            if not sockets:
                del SOCKETS_BY_USER[self.user_id]


def _item(n: int) -> dict:
    """One conversation as a list shows it, with its last message: the shape (and about the
    length) of an item of vachat's GET /api/chat/conversations."""
    ident = lambda: uuid.uuid4().hex[:26]
    stamp = (datetime.datetime(2026, 11, 1) + datetime.timedelta(minutes=n)).isoformat() + "Z"
    cid, owner, mid = ident(), ident(), ident()
    return {"id": cid, "ownerId": owner, "title": f"Conversation {n}", "description": "", "isPublic": False,
            "isArchived": False, "tags": [], "metadata": {}, "currentMessageId": mid, "messageCount": 1,
            "lastMessage": {"id": mid, "conversationId": cid, "userId": owner, "role": "user", "type": "text",
                            "content": f"Hello number {n}", "parentId": None, "metadata": {},
                            "clientMessageId": None, "isEdited": False, "editedAt": None, "files": [],
                            "createdAt": stamp, "updatedAt": stamp},
            "createdAt": stamp, "updatedAt": stamp}


ITEMS = [_item(n) for n in range(20)]


class ItemsHandler(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.write(json.dumps({"success": True, "data": ITEMS,
                               "pagination": {"page": 1, "limit": 20, "total": 20, "totalPages": 1}}))


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
    app = tornado.web.Application([(r"/ws", BenchSocket), (r"/ws/auth", AuthSocket),
                                   (r"/api/bench/items", ItemsHandler)],
                                  websocket_compression_options=None)
    app.listen(args.port, address=args.host)
    print(f"bare_server: listening on ws://{args.host}:{args.port}/ws pid={os.getpid()} "
          f"cpus={sorted(os.sched_getaffinity(0))} tornado={tornado.version}", file=sys.stderr, flush=True)
    try:
        tornado.ioloop.IOLoop.current().start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
