"""Shared benchmark plumbing: a sandbox in its own process, timed child processes.

The sandbox runs as a separate process (``instasent-import sandbox``) so that what we measure
of the importer — wall time, CPU seconds, peak RSS — is the importer's alone. Every server
binds 127.0.0.1 and every child is bounded by a timeout.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
PROJECT, DATASOURCE, TOKEN = "bench-project", "bench-datasource", "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Sandbox:
    url: str  # .../v1
    root: str  # http://127.0.0.1:PORT

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INSTASENT_API_URL": self.url,
            "INSTASENT_PROJECT": PROJECT,
            "INSTASENT_DATASOURCE": DATASOURCE,
            "INSTASENT_TOKEN": TOKEN,
        }

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.root}/__sandbox/stats", timeout=10) as resp:
            data: dict[str, Any] = json.load(resp)
            return data


@contextlib.contextmanager
def sandbox(*args: str, timeout: float = 20.0) -> Iterator[Sandbox]:
    """``instasent-import sandbox ARGS`` on a free loopback port, until the block ends."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "importer", "sandbox", "--host", "127.0.0.1", "--port", str(port),
        "--project", PROJECT, "--datasource", DATASOURCE, "--token", TOKEN, *args,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    box = Sandbox(f"{root}/v1", root)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                box.stats()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"sandbox did not start: {' '.join(cmd)}") from None
                time.sleep(0.1)
        yield box
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float  # user + sys of the child
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def bytecode() -> None:
    """Compile the importer's modules, as ``pip install`` does for an installed package.

    An editable checkout run with PYTHONDONTWRITEBYTECODE (as on these machines) would
    otherwise compile every module from source at each start: ~0.06 CPU-s a run that no
    installed copy pays.
    """
    compileall.compile_dir(ROOT / "importer", quiet=1)


def measure(cmd: Sequence[str], *, env: dict[str, str] | None = None,
                   timeout: float = 1800.0) -> Measured:
    """Run one child to completion, with its own CPU seconds and peak RSS (via os.wait4)."""
    bytecode()
    start = time.monotonic()
    proc = subprocess.Popen(
        list(cmd), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = start + timeout
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    # Drain pipes in threads so a chatty child cannot block on a full pipe.
    def drain(stream: Any, sink: list[str]) -> None:
        sink.append(stream.read())

    threads = [
        threading.Thread(target=drain, args=(proc.stdout, out_chunks), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, err_chunks), daemon=True),
    ]
    for t in threads:
        t.start()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.05)
    wall = time.monotonic() - start
    for t in threads:
        t.join(timeout=10)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux: kilobytes
        returncode=proc.returncode,
        stdout="".join(out_chunks),
        stderr="".join(err_chunks),
    )


def machine() -> str:
    load = os.getloadavg()[0]
    return (
        f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} · load {load:.2f} · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )

