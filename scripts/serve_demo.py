"""`make serve-demo`: serve the demo model with a real Triton server and call it.

Writes a repository for demo/model.onnx (exported first if missing), starts `bisenet-serve
run` from the serving environment (.venv-serve) on free ports of 127.0.0.1, segments the
held-out demo scenes through Segmenter("grpc://...") and Segmenter("http://...") and locally,
prints agreement and latencies, and stops the server. Nothing is left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main() -> int:
    import numpy as np

    from bisenet_deploy.runtime import Segmenter
    from bisenet_deploy.runtime.sources import list_images, read_image
    from bisenet_deploy.serving.repository import RepoOptions, write_repository

    model = ROOT / "demo" / "model.onnx"
    if not model.is_file():
        subprocess.run([sys.executable, "-m", "bisenet_deploy.cli.export", "--demo", "--size", "512x512", "-o",
                        str(model), "-q"], check=True)
    scenes = ROOT / "demo" / "scenes" / "images"
    if not scenes.is_dir():
        subprocess.run([sys.executable, "-m", "bisenet_deploy.datasets.shapes", str(scenes.parent), "--split",
                        "heldout", "--count", "8"], check=True)
    work = ROOT / "build" / "serve-demo"
    shutil.rmtree(work, ignore_errors=True)
    repo = write_repository(model, work / "repo", RepoOptions(backend="onnxruntime"))
    print(f"wrote {repo}")
    http, grpc, metrics = free_ports(3)
    server = subprocess.Popen([str(SERVE_PYTHON), "-m", "bisenet_deploy.cli.serve", "run", str(repo),
                               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        for line in server.stdout:
            print("  " + line.rstrip())
            if "ready in" in line or time.monotonic() > deadline:
                break
        frames = [read_image(p) for p in list_images(scenes)]
        local = Segmenter(model, backend="onnxruntime")
        for url in (f"grpc://127.0.0.1:{grpc}/bisenet", f"http://127.0.0.1:{http}/bisenet"):
            remote = Segmenter(url)
            remote(frames[0]), local(frames[0])  # connections and arenas up
            same, times = 0, {"remote": [], "local": []}
            for frame in frames:
                start = time.perf_counter()
                a = remote(frame)
                times["remote"].append(time.perf_counter() - start)
                start = time.perf_counter()
                b = local(frame)
                times["local"].append(time.perf_counter() - start)
                same += int((a == b).all())
            med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
            print(f"{url}: {same}/{len(frames)} held-out scenes with labels identical to the local Segmenter; "
                  f"median {med['remote']:.1f} ms end to end vs {med['local']:.1f} ms local")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        print(f"server stopped (exit {server.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
