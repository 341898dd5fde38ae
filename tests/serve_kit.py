"""Shared pieces of the serving tests: the tiny artifacts, a Python that can run `vlexport serve`,
free loopback ports, and Triton clients.

`vlexport serve` needs the `serve` extra (PyTriton, which pins numpy < 2); CI installs it in a second
environment and names its interpreter in VLEXPORT_SERVE_PYTHON. The clients (tritonclient) and the
artifacts come from the test environment itself.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from functools import lru_cache

import numpy as np

TINY = ("tiny-visualbert-vqa", "tiny-vilt-vqa", "tiny-dual-encoder", "tiny-captioner", "tiny-vipllava", "tiny-frcnn")
NP_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
                np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL", np.dtype(object): "BYTES"}


@lru_cache(maxsize=None)
def serve_python() -> tuple[str | None, str]:
    """(interpreter that can run `vlexport serve`, or None, and why not)."""
    candidates = [sys.executable]
    if os.environ.get("VLEXPORT_SERVE_PYTHON"):
        candidates.insert(0, os.environ["VLEXPORT_SERVE_PYTHON"])
    for py in candidates:
        probe = subprocess.run([py, "-c", "import pytriton, vlexport, onnxruntime, PIL"], capture_output=True)
        if probe.returncode == 0:
            return py, ""
    return None, ("needs the serve extra (nvidia-pytriton): pip install -e '.[serve]' in this or another environment "
                  "and set VLEXPORT_SERVE_PYTHON to its python (CI does)")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Server:
    """`vlexport serve PATHS ...` as a subprocess on free loopback ports."""

    def __init__(self, paths, *args, timeout: float = 240.0):
        py, why = serve_python()
        assert py, why
        self.http, self.grpc, self.metrics = free_ports(3)
        cmd = [py, "-m", "vlexport", "serve", *map(str, paths), "--http-port", str(self.http), "--grpc-port",
               str(self.grpc), "--metrics-port", str(self.metrics), "--threads", "1", *args]
        self.log = io.BytesIO()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"vlexport serve exited ({self.proc.returncode}):\n"
                                     f"{self.proc.stdout.read().decode(errors='replace')[-4000:]}")
            if self.ready():
                break
            assert time.monotonic() < deadline, "vlexport serve was not ready in time"
            time.sleep(0.5)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
            return r.read().decode()

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.output = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""


def http_inputs(feeds: dict):
    import tritonclient.http as http

    out = []
    for name, x in feeds.items():
        x = np.asarray(x)
        i = http.InferInput(name, list(x.shape), NP_TO_TRITON[x.dtype])
        i.set_data_from_numpy(x, binary_data=True)
        out.append(i)
    return out


def infer(client, model: str, feeds: dict, outputs=None) -> dict:
    r = client.infer(model, http_inputs(feeds))
    names = outputs or [o["name"] for o in r.get_response()["outputs"]]
    return {n: r.as_numpy(n) for n in names}


def png_bytes(img) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format="PNG")
    return buf.getvalue()
