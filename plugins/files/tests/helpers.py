"""Test material for the files plugin: real files made on the spot, multipart bodies, and a
raw HTTP client for what tornado's client cannot do (stop mid-body, read an early answer)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

# EXIF tags: GPSInfo (a sub-IFD), and Orientation.
GPS_INFO_TAG = 0x8825
ORIENTATION_TAG = 0x0112


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(size: tuple[int, int] = (64, 48), *, gps: bool = False, noise: bool = False) -> bytes:
    image = Image.new("RGB", size, (20, 120, 220))
    if noise:  # incompressible pixels make a file of a predictable, larger size
        image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    exif = Image.Exif()
    if gps:
        exif[GPS_INFO_TAG] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
        exif[0x010F] = "TestCam"  # Make
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, exif=exif.tobytes() if gps else b"")
    return out.getvalue()


def exif_of(data: bytes) -> dict[int, Any]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.getexif())


def pdf_bytes(text: str = "Hello") -> bytes:
    """A minimal valid one-page PDF, with a correct cross-reference table."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def docx_bytes(*, with_document: bool = True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        archive.writestr("_rels/.rels", "<Relationships/>")
        archive.writestr("word/styles.xml", "<styles/>")
        if with_document:
            archive.writestr("word/document.xml", "<document>hi</document>")
    return out.getvalue()


TEXT = "Plain notes, naïve café ☕\nline two with <angle> brackets later on\n".encode()
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<script>alert(1)</script><rect width="10" height="10"/></svg>')


def multipart(file: tuple[str, bytes, str] | None = None, fields: dict[str, str] | None = None,
              boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body: ``file`` as (name, bytes, declared type) in the field
    ``file``, then ``fields``. Returns (body, Content-Type)."""
    boundary = boundary or "vachat" + secrets.token_hex(12)
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n")
    if file is not None:
        filename, data, declared = file
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                f"Content-Type: {declared}\r\n\r\n").encode("utf-8")
        parts.append(head + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def upload(fetch: Any, user: Any, filename: str, data: bytes, declared: str = "application/octet-stream",
                 path: str = "/api/files/upload", **fields: str) -> Any:
    body, content_type = multipart((filename, data, declared), fields)
    return await fetch(path, method="POST", body=body, headers={"Content-Type": content_type}, user=user)


class Store:
    """The objects a node's backend holds, seen behind vachat's back: the sharded files under
    its upload folder, or the keys under its prefix in the bucket (through a plain botocore
    client). Keys are the plugin's own (``ab/cd/<32 hex>``), without the prefix."""

    def __init__(self, root: Path, s3: Any = None, bucket: str = "", prefix: str = "") -> None:
        self.root = root
        self._s3, self._bucket, self._prefix = s3, bucket, prefix

    def keys(self) -> list[str]:
        if self._s3 is None:
            return sorted(str(p.relative_to(self.root)) for p in self.root.glob("??/??/*") if p.is_file())
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=self._prefix)
        return sorted(item["Key"][len(self._prefix):] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        if self._s3 is None:
            return (self.root / key).read_bytes()
        return self._s3.get_object(Bucket=self._bucket, Key=self._prefix + key)["Body"].read()

    def contents(self) -> list[bytes]:
        return sorted(self.read(key) for key in self.keys())

    def put(self, key: str, data: bytes) -> None:
        if self._s3 is None:
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            (self.root / key).write_bytes(data)
        else:
            self._s3.put_object(Bucket=self._bucket, Key=self._prefix + key, Body=data)

    def remove(self, key: str) -> None:
        if self._s3 is None:
            (self.root / key).unlink()
        else:
            self._s3.delete_object(Bucket=self._bucket, Key=self._prefix + key)

    def exists(self, key: str) -> bool:
        return key in self.keys()

    def incoming(self) -> list[Path]:
        """Uploads still in the node's spool (with any backend)."""
        return incoming(self.root)

    def abandon_multipart(self, key: str) -> list[str]:
        """On S3, start a multipart upload of ``key`` and leave it, as a crash would: the name
        ``files reconcile`` reports for it. Nothing on disk."""
        if self._s3 is None:
            return []
        upload = self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._prefix + key)
        self._s3.upload_part(Bucket=self._bucket, Key=self._prefix + key, UploadId=upload["UploadId"],
                             PartNumber=1, Body=b"first part")
        return [f"multipart:{key}:{upload['UploadId']}"]

    def multipart_uploads(self) -> list[str]:
        if self._s3 is None:
            return []
        listed = self._s3.list_multipart_uploads(Bucket=self._bucket, Prefix=self._prefix)
        return [upload["Key"] for upload in listed.get("Uploads", [])]


def incoming(root: Path) -> list[Path]:
    folder = root / ".incoming"
    return sorted(folder.iterdir()) if folder.is_dir() else []




def _whole_response(received: bytearray) -> bool:
    """Whether ``received`` holds a response's head and all the body its Content-Length says."""
    head_end = received.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", received[:head_end], re.IGNORECASE)
    return length is not None and len(received) - head_end - 4 >= int(length.group(1))


async def raw_request(port: int, head: str, body_chunks: Any = (), *, close_after_body: bool = False,
                      read_timeout: float = 30.0) -> tuple[int | None, dict[str, Any] | None]:
    """Send a request over a plain socket: the head, then each body chunk, while reading the
    answer at the same time (a server may answer early and close); optionally close without
    finishing the body. Returns (status, JSON body) of the answer, or (None, None)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read_all() -> None:
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
                if _whole_response(received):
                    return  # the connection may stay open (keep-alive): the answer is here
        except (ConnectionError, OSError):
            pass

    reading = asyncio.ensure_future(read_all())
    try:
        writer.write(head.encode("latin-1"))
        for chunk in body_chunks:
            if reading.done():
                break  # the server answered and closed: stop sending
            writer.write(chunk)
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                break
        if close_after_body:
            return None, None
        try:
            await asyncio.wait_for(asyncio.shield(reading), read_timeout)
        except asyncio.TimeoutError:
            pass
    finally:
        writer.close()
        reading.cancel()
    raw = bytes(received)
    if not raw.startswith(b"HTTP/1.1 "):
        return None, None
    _, _, content = raw.partition(b"\r\n\r\n")
    try:
        payload = json.loads(content)
    except ValueError:
        payload = None
    return int(raw[9:12]), payload
