"""`vlexport serve PATH [PATH ...]`: a real Triton Inference Server for artifacts.

The server is the `tritonserver` binary PyTriton ships (`pip install "vlexport[serve]"`), started
on a model repository vlexport writes in "serve" mode (vlexport/serving/repository.py): every
endpoint is a Triton Python-backend model running the vlexport runtime (ONNX Runtime here,
TensorRT where the artifact has an engine that fits, as `vlexport.load` picks). Triton does the
rest: HTTP and gRPC, health (`/v2/health/ready`) and Prometheus metrics (`/metrics`), dynamic
batching, instance groups, and a clean shutdown on SIGTERM (requests in flight are answered, new
ones refused, for up to --exit-timeout seconds).

Why not PyTriton's `Triton.bind` API: when its batcher merges requests and one is bad, it sends
that one error to every request of the merged batch; Triton's own Python backend answers each
request on its own (endpoints.execute isolates them), and the repository is the same one
`vlexport triton-repo` writes for a Triton cluster.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from vlexport.errors import ConfigError, VlexportError


class ServeError(VlexportError, RuntimeError):
    """The Triton server could not be started or stopped."""


def tritonserver_dist() -> Path:
    """PyTriton's bundled Triton (bin/, backends/, python_backend_stubs/), found without importing it."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.origin:
        raise ServeError("serving needs PyTriton's tritonserver: pip install 'vlexport[serve]' (nvidia-pytriton; "
                         "it pins numpy < 2, so use a separate environment if the rest needs numpy 2)")
    root = Path(spec.origin).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServeError(f"PyTriton is installed but has no tritonserver binary under {root}")
    return root


def _workspace(dist: Path, where: Path) -> Path:
    """backends/python with the stub for this interpreter (Triton finds it next to the backend)."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServeError(f"PyTriton has no Python-backend stub for Python {ver} (it has "
                         f"{sorted(p.name for p in (dist / 'python_backend_stubs').iterdir())})")
    py = where / "backends" / "python"
    py.mkdir(parents=True)
    for f in (dist / "backends" / "python").iterdir():
        if f.is_file():
            os.symlink(f, py / f.name)
    os.symlink(stub, py / "triton_python_backend_stub")
    return where / "backends"


def _environment(dist: Path) -> dict:
    env = os.environ.copy()
    libs = [str(dist.parent.parent / "nvidia_pytriton.libs")]
    # The stub links libpython3.X.so by soname; with a Python built outside the system (pyenv,
    # conda) the system's libpython would be found first and run this interpreter's standard library
    # with another build's C core. Put this interpreter's own libpython first.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and any(Path(libdir).glob("libpython3*.so*")):
        libs.insert(0, libdir)
    env["LD_LIBRARY_PATH"] = ":".join(libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the stub runs this environment
    env.setdefault("OMP_NUM_THREADS", "1")  # ORT sets its own threads; no oversubscription per instance
    return env


def _die_with_parent():
    """In the child before exec (Linux): SIGTERM when the process that started it dies, so a
    `vlexport serve` killed with SIGKILL leaves no tritonserver holding the ports."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


class TritonProcess:
    """A tritonserver subprocess over a serve-mode repository of one or more artifacts."""

    def __init__(self, artifacts: list, *, host="127.0.0.1", http_port=8000, grpc_port=8001, metrics_port=8002,
                 exit_timeout: int = 30, log_verbose: int = 0, repository_dir=None, **repo_options):
        """repository_dir: serve an existing model repository (e.g. one `vlexport triton-repo` wrote, whose
        Python-backend models then run here; its native ONNX/TensorRT models need a full Triton) instead
        of writing one for `artifacts`."""
        from vlexport.serving import repository

        self.dist = tritonserver_dist()
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.exit_timeout = exit_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="vlexport-serve-"))
        self.models = []
        try:
            self.backends = _workspace(self.dist, self.workdir)
            repo = Path(repository_dir) if repository_dir is not None else self.workdir / "models"
            names = repo_options.pop("names", None) or [None] * len(artifacts)
            wanted = repo_options.pop("endpoints", None)
            for art, name in zip(artifacts, names):
                # --endpoints across several artifacts: each serves the names it has
                models = [m for m in repository.plan(art, mode="serve", name=name, **repo_options)
                          if not wanted or m["endpoint"] in wanted]
                clash = {m["name"] for m in models} & {m["name"] for m in self.models}
                if clash:
                    raise ConfigError(f"two artifacts give the Triton model name(s) {sorted(clash)}; pass --name")
                repository.write_models(art, models, repo, "serve")
                self.models += models
            if wanted:
                missing = [n for n in wanted if n not in {m["endpoint"] for m in self.models}]
                if missing:
                    from vlexport.errors import InputError

                    raise InputError(f"--endpoints: no artifact has an endpoint named {missing}")
            self.repo = repo
            self.log_path = self.workdir / "tritonserver.log"
            self.cmd = [str(self.dist / "bin" / "tritonserver"), f"--model-repository={repo}",
                        f"--backend-directory={self.backends}", f"--http-address={host}", f"--http-port={http_port}",
                        f"--grpc-address={host}", f"--grpc-port={grpc_port}", f"--metrics-address={host}",
                        f"--metrics-port={metrics_port}", "--allow-metrics=true", "--allow-gpu-metrics=false",
                        f"--exit-timeout-secs={exit_timeout}", f"--log-verbose={log_verbose}",
                        "--strict-readiness=true"]
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.proc = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self, timeout: float = 300.0, progress=None):
        self._log = open(self.log_path, "wb")
        # its own session: a Ctrl-C in the terminal reaches only us, and we forward SIGTERM (Triton's drain)
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=_environment(self.dist),
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServeError(f"tritonserver exited with code {self.proc.returncode} while starting:\n{self.log_tail()}")
            if _ready(f"{self.http_url}/v2/health/ready"):
                return self
            if progress:
                progress()
            time.sleep(0.25)
        self.stop()
        raise ServeError(f"tritonserver was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        useful = [x for x in text if "Failed" in x or "error" in x.lower() or "E1" in x[:3]] or text
        return "\n".join(useful[-lines:])

    def wait(self) -> int:
        return self.proc.wait()

    def stop(self, sig=signal.SIGTERM) -> int | None:
        """SIGTERM: Triton answers what is in flight (up to exit_timeout s), then exits."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(self.exit_timeout + 15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()


def serve(artifacts: list, **options) -> int:
    """Start the server, print what it serves, run until SIGTERM/SIGINT; returns Triton's exit code."""
    from rich.console import Console

    from vlexport.serving import repository

    console = Console(stderr=True, highlight=False)
    server = TritonProcess(artifacts, **options)
    stop = {"sig": None}

    def on_signal(sig, _frame):  # forwarded: Triton drains in-flight requests on SIGTERM
        stop["sig"] = sig
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with console.status(f"starting Triton ({len(server.models)} models) ..."):
            server.start()
        table = repository.models_table(server.models, f"Triton serving on {server.host}: HTTP {server.http_port}, "
                                        f"gRPC {server.grpc_port}, metrics {server.metrics_port}", second="kind")
        console.print(table)
        console.print(f"health: {server.http_url}/v2/health/ready   metrics: http://{server.host}:{server.metrics_port}/metrics"
                      f"   stop: Ctrl-C or SIGTERM")
        sys.stderr.flush()
        rc = server.wait()
        if stop["sig"] is None and rc != 0:
            console.print(f"tritonserver exited with code {rc}:\n{server.log_tail()}")
        return 0 if stop["sig"] is not None and rc in (0, -signal.SIGTERM) else rc
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.stop()
        server.cleanup()
