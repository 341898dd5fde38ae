"""`vlexport serve` and `vlexport triton-repo`: argument parsing only; the work is in server.py and
repository.py."""

from __future__ import annotations

from pathlib import Path

from vlexport.errors import ConfigError


def _common(p):
    p.add_argument("--endpoints", nargs="+", metavar="NAME", help="serve only these endpoints (default: every graph and "
                   "processor endpoint; `vlexport triton-repo --list` shows them)")
    p.add_argument("--max-batch", type=int, help="Triton max_batch_size (default: the artifact's built batch range)")
    p.add_argument("--max-queue-delay-us", type=int, default=500, help="dynamic batching: how long a request may wait "
                   "for others to join its batch (default 500 us)")
    p.add_argument("--no-batching", action="store_true", help="no dynamic batching (each request runs alone)")
    p.add_argument("--instances", type=int, default=1, help="model instances per endpoint (Triton instance_group count)")
    p.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 | int4 (as vlexport.load)")
    p.add_argument("--name", action="append", help="Triton model name prefix (default: the artifact folder's name); "
                   "once per PATH")


def _options(args) -> dict:
    if args.max_batch is not None and args.max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.instances < 1:
        raise ConfigError(f"--instances must be >= 1, got {args.instances}")
    if args.max_queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us must be >= 0, got {args.max_queue_delay_us}")
    return dict(endpoints=args.endpoints, max_batch=args.max_batch, instances=args.instances,
                delay_us=None if args.no_batching else args.max_queue_delay_us, precision=args.precision)


def cmd_serve(args) -> int:
    from vlexport.artifact import Artifact
    from vlexport.serving.server import serve

    arts = [Artifact(p) for p in args.path]
    if args.name and len(args.name) != len(arts):
        raise ConfigError(f"--name: give one per PATH ({len(arts)}), got {len(args.name)}")
    opts = _options(args)
    return serve(arts, names=args.name, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                 metrics_port=args.metrics_port, exit_timeout=args.exit_timeout, backend=args.backend,
                 threads=args.threads, **opts)


def cmd_triton_repo(args) -> int:
    from rich.console import Console

    from vlexport.artifact import Artifact
    from vlexport.serving import repository

    art = Artifact(args.path)
    name = args.name[0] if args.name else None
    opts = _options(args)
    if args.list:
        models = repository.plan(art, mode="deploy", name=name, platform=args.platform, **opts)
    else:
        if args.out is None:
            raise ConfigError("--out REPO is required (or --list to show what would be written)")
        models = repository.write(art, args.out, mode="deploy", name=name, platform=args.platform, **opts)
    table = repository.models_table(models, f"Triton models{'' if args.list else f' written to {args.out}'}")
    Console(highlight=False).print(table)
    return 0


def add_parsers(sub):
    p = sub.add_parser("serve", help="serve artifacts with Triton Inference Server (HTTP, gRPC, metrics, dynamic "
                       "batching; pip install 'vlexport[serve]')")
    p.add_argument("path", type=Path, nargs="+", help="artifact folder(s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback; 0.0.0.0 for all)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--exit-timeout", type=int, default=30, help="on SIGTERM, seconds to finish requests in flight")
    p.add_argument("--backend", default="auto", help="auto (TensorRT where an engine fits, else ONNX Runtime) | "
                   "onnxruntime | tensorrt")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per model instance")
    _common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("triton-repo", help="write a native Triton model repository (config.pbtxt per model)")
    p.add_argument("path", type=Path, help="artifact folder")
    p.add_argument("--out", type=Path, help="repository folder to write (replaced only if vlexport wrote it)")
    p.add_argument("--platform", default="auto", choices=["auto", "onnx", "tensorrt"],
                   help="graphs as onnxruntime_onnx or tensorrt_plan models (auto: the engine where there is one)")
    p.add_argument("--list", action="store_true", help="show the models without writing")
    _common(p)
    p.set_defaults(func=cmd_triton_repo, backend="auto", threads=None)
