"""Upload and download throughput of the files plugin, and the server's memory during a large
upload, beside a bare Tornado reference (``files_bare_server.py``) in the same run.

For each target: start the server pinned to CPU 0, upload a ``--size`` MiB file (a WAV header
over random bytes: an allowed type, incompressible, and not text, so no per-byte text check)
as one multipart body with a Content-Length, from a raw socket pinned to CPU 1; then download
it. Upload MiB/s counts the file's bytes over the time from the first byte sent to the answer;
download MiB/s the bytes received over the time to the last one. The server's RSS is sampled
every 20 ms during the upload (from /proc): the figure is its peak minus its level before.
Each target runs ``--rounds`` times: the best throughput and the largest memory growth are kept.

vachat runs with ``VACHAT_ENV=test`` (the test authentication plugin names the caller),
SQLite in a temporary folder, and ``MAX_FILE_SIZE`` lifted above ``--size`` through the
environment. Run from the repository root:

    .venv/bin/python bench/files_bench.py [--size 100] [--rounds 3] [--targets bare,vachat]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
SEND_BYTES = 256 * 1024  # socket writes of the client
RSS_SAMPLE_SECONDS = 0.02
BOUNDARY = "filesbench7c1d0e"


def log(message: str) -> None:
    print(f"files_bench: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pin(cpu: int) -> None:
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wav_payload(size: int) -> tuple[bytes, bytes]:
    """A WAV header and a 1 MiB random block repeated to ``size`` bytes in all."""
    data_size = size - 44
    header = (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8) + b"data" + struct.pack("<I", data_size))
    return header, os.urandom(MiB)


async def upload(port: int, path: str, size: int, headers: str, multipart: bool, pid: int) -> dict:
    header, block = wav_payload(size)
    if multipart:
        prefix = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.wav"\r\n'
                  "Content-Type: audio/wav\r\n\r\n").encode()
        suffix = f"\r\n--{BOUNDARY}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    else:
        prefix, suffix, content_type = b"", b"", "application/octet-stream"
    length = len(prefix) + size + len(suffix)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {length}\r\nConnection: close\r\n{headers}\r\n").encode())
    baseline, peak, sampling = rss(pid), 0, True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss(pid))
            await asyncio.sleep(RSS_SAMPLE_SECONDS)

    sampler = asyncio.ensure_future(sample())
    started = time.perf_counter()
    writer.write(prefix + header)
    sent = len(header)
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        for offset in range(0, len(piece), SEND_BYTES):
            writer.write(piece[offset:offset + SEND_BYTES])
            await writer.drain()
        sent += len(piece)
    writer.write(suffix)
    await writer.drain()
    answer = await reader.read()
    elapsed = time.perf_counter() - started
    sampling = False
    await sampler
    writer.close()
    status = int(answer[9:12])
    body = json.loads(answer.partition(b"\r\n\r\n")[2] or b"null")
    if status not in (200, 201):
        raise RuntimeError(f"upload answered {status}: {body}")
    return {"seconds": elapsed, "mib_per_s": size / MiB / elapsed, "rss_growth_mib": (peak - baseline) / MiB,
            "rss_before_mib": baseline / MiB, "answer": body}


async def download(port: int, path: str, headers: str) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    received = 0
    while chunk := await reader.read(1 << 20):
        received += len(chunk)
    elapsed = time.perf_counter() - started
    writer.close()
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"download answered {head[:40]!r}")
    return {"seconds": elapsed, "mib_per_s": received / MiB / elapsed, "bytes": received}


def wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("server did not open its port")


def start(target: str, port: int, folder: Path, size: int) -> subprocess.Popen:
    if target == "bare":
        command = [sys.executable, str(ROOT / "bench" / "files_bare_server.py"), str(port), str(folder)]
        env = dict(os.environ)
    else:
        command = [sys.executable, "-m", "vachat", "serve"]
        env = {**os.environ, "VACHAT_ENV": "test", "PORT": str(port), "HOST": "127.0.0.1",
               "VACHAT_DATA_DIR": str(folder), "DATABASE_URL": f"sqlite:///{folder}/bench.db", "REDIS_URL": "",
               "LOG_DIR": "", "LOG_LEVEL": "WARNING", "AUTO_MIGRATE": "1", "RATE_LIMIT_GLOBAL": "1000000/60s",
               "VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth", "VACHAT_PLUGINS": "files,testauth",
               "MAX_FILE_SIZE": str(size + MiB), "FILES_USER_QUOTA": str(100 * size),
               "HTTP_BODY_TIMEOUT": "600"}
    process = subprocess.Popen(command, env=env, cwd=str(folder), preexec_fn=lambda: pin(0),
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=open(folder / "server.log", "wb"))
    wait_port(port, process)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def run_target(target: str, size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"files-bench-{target}-") as tmp:
        folder = Path(tmp)
        port = free_port()
        process = start(target, port, folder, size)
        try:
            if target == "bare":
                up = await upload(port, "/upload", size, "", False, process.pid)
                down = await download(port, "/download", "")
            else:
                auth = "Authorization: Bearer test:bench\r\n"
                up = await upload(port, "/api/files/upload", size, auth, True, process.pid)
                file_id = up["answer"]["data"]["id"]
                down = await download(port, f"/api/files/{file_id}/download", auth)
        finally:
            stop(process)
    return {"target": target, "upload_mib_s": up["mib_per_s"], "download_mib_s": down["mib_per_s"],
            "upload_rss_growth_mib": up["rss_growth_mib"], "rss_before_mib": up["rss_before_mib"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, help="file size in MiB (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target; the best is kept")
    parser.add_argument("--targets", default="bare,vachat")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    pin(1)
    size = args.size * MiB
    best: dict[str, dict] = {}
    for round_number in range(args.rounds):
        for target in args.targets.split(","):
            result = asyncio.run(run_target(target, size))
            log(f"round {round_number + 1} {target}: up {result['upload_mib_s']:.0f} MiB/s, "
                f"down {result['download_mib_s']:.0f} MiB/s, RSS +{result['upload_rss_growth_mib']:.1f} MiB")
            kept = best.setdefault(target, dict(result))
            # Best throughput of the rounds (a shared box only ever slows a run down), and the
            # worst memory growth (the conservative figure).
            for key in ("upload_mib_s", "download_mib_s", "upload_rss_growth_mib"):
                kept[key] = max(kept[key], result[key])
    bare = best.get("bare")
    print(f"{'target':<8} {'upload MiB/s':>13} {'download MiB/s':>15} {'RSS growth during upload':>25}")
    for target, result in best.items():
        ratio = ""
        if bare and target != "bare":
            ratio = f"  ({result['upload_mib_s'] / bare['upload_mib_s']:.2f}x / {result['download_mib_s'] / bare['download_mib_s']:.2f}x of bare)"
        print(f"{target:<8} {result['upload_mib_s']:>13.0f} {result['download_mib_s']:>15.0f} "
              f"{result['upload_rss_growth_mib']:>21.1f} MiB{ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps({"size_mib": args.size, "results": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
