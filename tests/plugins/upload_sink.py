"""A plugin with streamed uploads, for the tests of ``StreamingBodyHandler``: it hashes what
it receives, holding none of it."""

import hashlib

from vachat.web import StreamingBodyHandler, endpoint
from vachat.plugin_api import hookimpl

__version__ = "1.0"
#: Larger than the default MAX_JSON_BODY (1 MiB), so only a raised connection cap lets it in.
SINK_LIMIT = 3 * 1024 * 1024


class SinkHandler(StreamingBodyHandler):
    max_body_size = SINK_LIMIT

    def prepare(self):
        self.digest = hashlib.sha256()
        return super().prepare()

    def receive_chunk(self, chunk):
        self.digest.update(chunk)

    @endpoint("Hash an upload", status=201)
    async def post(self):
        self.respond({"bytes": self._body_size, "sha256": self.digest.hexdigest(), "by": self.actor.id}, status=201)


class SmallSinkHandler(SinkHandler):
    """The same, with its cap given per route."""


@hookimpl
def vachat_routes(app):
    return [
        (r"/api/sink/big", SinkHandler),
        (r"/api/sink/small", SmallSinkHandler, {"max_body_size": 1000}),
    ]
