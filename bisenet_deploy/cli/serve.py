"""``bisenet-serve``: a Triton model repository from an artifact, and a real server on it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import UserError
from .common import Parser, cli_entry, nonnegative_int, positive_float, positive_int

PROG = "bisenet-serve"

EXAMPLES = """\
examples:
  bisenet-serve repo demo/model.onnx -o repo/                     # repo/bisenet: frames in, labels out
  bisenet-serve run repo/ --grpc-port 8001 --http-port 8000       # 127.0.0.1 only; Ctrl-C stops it
  python -c 'from bisenet_deploy.runtime import Segmenter; print(Segmenter("grpc://127.0.0.1:8001/bisenet"))'
  bisenet-serve repo model.fp16.engine -o repo/ --native --gpu     # + bisenet_trt and bisenet_ensemble

The server comes from NVIDIA's containers (tritonserver on PATH) or the nvidia-pytriton wheel
(make serve-setup builds .venv-serve with it; it needs numpy < 2).
"""


def _port(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port number 1..65535, got {value}")
    return value


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Serve BiSeNet artifacts with Triton Inference Server.", epilog=EXAMPLES)
    sub = p.add_subparsers(dest="command", required=True, metavar="{repo,run}")
    r = sub.add_parser("repo", help="write a model repository", description="Write a Triton model repository.")
    r.add_argument("artifact", type=Path, help=".onnx, .engine/.plan (with its sidecar) or .pth")
    r.add_argument("-o", "--output", type=Path, required=True, metavar="REPO", help="new repository folder")
    r.add_argument("--name", default="bisenet", help="model name (default: bisenet)")
    r.add_argument("--max-batch", type=positive_int, default=8, help="largest dynamic batch (default: 8)")
    r.add_argument("--instances", type=positive_int, default=1, help="model instances (default: 1)")
    r.add_argument("--gpu", action="store_true", help="instances on the GPU (KIND_GPU)")
    r.add_argument("--network-size", action="store_true", help="labels at the network size instead of the frame's")
    r.add_argument("--backend", default="", help="the served Segmenter's backend (default: as Segmenter chooses)")
    r.add_argument("--threads", type=nonnegative_int, default=0, help="CPU threads of the served model (0: the backend's default)")
    r.add_argument("--native", action="store_true",
                   help="also onnxruntime_onnx / tensorrt_plan configs and an ensemble around them (NVIDIA's containers)")
    s = sub.add_parser("run", help="start tritonserver on a repository",
                       description="Start a real tritonserver; Ctrl-C or SIGTERM stops it cleanly.")
    s.add_argument("repository", type=Path, help="model repository (bisenet-serve repo)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    s.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default: 8000)")
    s.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default: 8001)")
    s.add_argument("--metrics-port", type=_port, default=8002, help="metrics port (default: 8002)")
    s.add_argument("--timeout", type=positive_float, default=120.0, help="seconds to wait for readiness (default: 120)")
    s.add_argument("--verbose", action="store_true", help="stream the server's own log")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "repo":
        from ..serving.repository import RepoOptions, write_repository

        options = RepoOptions(name=args.name, max_batch=args.max_batch, instances=args.instances, gpu=args.gpu,
                              output_size="network" if args.network_size else "frame", backend=args.backend,
                              backend_options={"threads": args.threads} if args.threads else {}, native=args.native)
        path = write_repository(args.artifact, args.output, options, log=lambda m: print(f"  {m}"))
        print(f"wrote {path}: serve it with  bisenet-serve run {path}")
        return 0
    from ..serving.server import ServerOptions, start_server, stop_server

    if len({args.http_port, args.grpc_port, args.metrics_port}) < 3:
        raise UserError("--http-port, --grpc-port and --metrics-port must differ")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    options = ServerOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port, ready_timeout=args.timeout, verbose=args.verbose)
    start = time.perf_counter()
    server = start_server(args.repository, options)
    try:
        models = sorted(p.name for p in args.repository.iterdir()
                        if (p / "config.pbtxt").is_file() and p.name not in server.skipped)
        if server.skipped:
            print(f"{PROG}: not loaded: {', '.join(server.skipped)} (this tritonserver has the Python backend only; "
                  "NVIDIA's Triton container serves them)", flush=True)
        print(f"{PROG}: ready in {time.perf_counter() - start:.1f} s: " + json.dumps(server.endpoints)
              + f"; models {', '.join(models)}", flush=True)
        print(f"{PROG}: Segmenter(\"{server.endpoints['grpc']}/{models[0]}\"); Ctrl-C stops the server", flush=True)
        try:
            while server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:  # Ctrl-C and SIGTERM are how a server is stopped: not an error
            return 0
        raise UserError(f"tritonserver stopped by itself (code {server.process.returncode})")
    finally:
        code = stop_server(server)
        note = f"; {server.stop_note}" if server.stop_note else ""
        print(f"{PROG}: server stopped (exit {code}{note})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
