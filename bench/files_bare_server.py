"""The bare Tornado reference for ``files_bench.py``: the least a streamed upload and a chunked
download can cost in Tornado on this machine.

``POST /upload`` (``stream_request_body``) appends each chunk to a file as it arrives, with no
multipart parsing, hashing, sniffing, worker threads, authentication or database; answers
``{"size": n}``. ``GET /download`` streams that file back in 256 KiB chunks with a flush
between them. Run: ``python bench/files_bare_server.py PORT FOLDER``.
"""

import json
import os
import sys

import tornado.ioloop
import tornado.web

CHUNK_BYTES = 256 * 1024


@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    def prepare(self):
        self.request.connection.set_max_body_size(1 << 40)
        self.size = 0
        self.file = open(os.path.join(self.settings["folder"], "upload.bin"), "wb")

    def data_received(self, chunk):
        self.file.write(chunk)
        self.size += len(chunk)

    def post(self):
        self.file.close()
        self.finish(json.dumps({"size": self.size}))


class Download(tornado.web.RequestHandler):
    async def get(self):
        path = os.path.join(self.settings["folder"], "upload.bin")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(os.path.getsize(path)))
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                self.write(chunk)
                await self.flush()
        self.finish()


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    app = tornado.web.Application([(r"/upload", Upload), (r"/download", Download)], folder=folder)
    app.listen(port, "127.0.0.1", max_body_size=1 << 40)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
