"""Downloads against slow servers and full disks (issue 15, finding 11): a cancel takes effect within
a second however slow the server, and a part file that cannot be written is never kept.

Real sockets (a local HTTP server thread that trickles its body, or never answers) and a real write
failure (a child process with a file-size limit, the way a full disk fails a write).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from PlaneSSLLib.slicer_logic import models_registry as mr

ROOT = Path(__file__).resolve().parents[1]
BODY = bytes(range(256)) * 400  # 100 kB


@contextlib.contextmanager
def slow_server(mode: str):
    """A server on 127.0.0.1: ``trickle`` sends headers then 100 bytes every 0.1 s; ``silent`` accepts
    and never answers. Closed at the end of the block."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.recv(4096)
            if mode == "silent":
                stop.wait(30)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY))
            for i in range(0, len(BODY), 100):
                if stop.wait(0.1):
                    return
                conn.sendall(BODY[i:i + 100])

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/blob.bin"
    finally:
        stop.set()
        thread.join(timeout=5)
        for c in conns:
            c.close()
        listener.close()


@pytest.mark.parametrize("mode", ["trickle", "silent"])
def test_cancel_takes_effect_within_a_second_against_a_slow_server(tmp_path, mode):
    dest = tmp_path / "cache" / "blob.bin"
    cancel_at: list[float] = []
    seen: list[int] = []

    def cancelled() -> bool:
        if not cancel_at and time.monotonic() - start > 0.6:
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    with slow_server(mode) as url:
        start = time.monotonic()
        with pytest.raises(mr.DownloadError, match="cancelled"):
            mr.download_file(url, dest, hashlib.sha256(BODY).hexdigest(), timeout=60,
                             cancelled=cancelled, progress=lambda done, total: seen.append(done))
        waited = time.monotonic() - cancel_at[0]
    assert waited < 1.0, f"cancel took {waited:.2f} s"
    assert not dest.exists()
    if mode == "trickle":
        assert seen and 0 < seen[-1] < len(BODY)  # it was receiving, slowly, when cancelled
        assert dest.with_name("blob.bin.part").stat().st_size == seen[-1]  # kept for a resume


def test_a_silent_server_times_out_with_a_message(tmp_path):
    with slow_server("silent") as url, pytest.raises(mr.DownloadError, match="timed out"):
        mr.download_file(url, tmp_path / "blob.bin", hashlib.sha256(BODY).hexdigest(), timeout=0.5)


def test_a_full_disk_leaves_no_part_file(tmp_path):
    """The write fails the way a full disk fails it (here: EFBIG past a file-size limit, in a child)."""
    src = tmp_path / "srv" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(bytes(3 << 20))  # 3 MiB: several chunks
    dest = tmp_path / "cache" / "blob.bin"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        "from PlaneSSLLib.slicer_logic import models_registry as mr\n"
        "try:\n"
        "    mr.download_file(sys.argv[1], sys.argv[2], sys.argv[3])\n"
        "except mr.DownloadError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, src.as_uri(), str(dest),
                          hashlib.sha256(src.read_bytes()).hexdigest()],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "cannot write" in run.stdout and "partial download was deleted" in run.stdout
    assert "Traceback" not in run.stderr
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()
    assert list(dest.parent.iterdir()) == []
