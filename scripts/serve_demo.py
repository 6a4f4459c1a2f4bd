"""`make serve-demo`: serve the demo model with a real Triton server and call it.

Writes a repository for demo/model.onnx (exported first if missing), starts `bisenet-serve
run` from the serving environment (.venv-serve) on free ports of 127.0.0.1, segments the
held-out demo scenes through Segmenter("grpc://...") and Segmenter("http://...") and locally,
prints agreement and latencies, and stops the server. Nothing is left running. Exit 1 when
the server does not come up or any scene's labels differ. DEMO_DIR and WORK move the demo
folder and the repository (the tests use temporary ones).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = Path(os.environ.get("BISENET_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))


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
    from bisenet_deploy.serving.server import stop_process_group

    if not SERVE_PYTHON.is_file():
        print(f"serve-demo: no serving environment at {SERVE_PYTHON}: run make serve-setup", file=sys.stderr)
        return 2
    demo = Path(os.environ.get("DEMO_DIR", ROOT / "demo"))
    model = demo / "model.onnx"
    if not model.is_file():
        subprocess.run([sys.executable, "-m", "bisenet_deploy.cli.export", "--demo", "--size", "512x512", "-o",
                        str(model), "-q"], check=True)
    scenes = demo / "scenes" / "images"
    if not scenes.is_dir():
        subprocess.run([sys.executable, "-m", "bisenet_deploy.datasets.shapes", str(scenes.parent), "--split",
                        "heldout", "--count", "8"], check=True)
    work = Path(os.environ.get("WORK", ROOT / "build" / "serve-demo"))
    shutil.rmtree(work, ignore_errors=True)
    repo = write_repository(model, work / "repo", RepoOptions(backend="onnxruntime"))
    print(f"wrote {repo}")
    http, grpc, metrics = free_ports(3)
    server = subprocess.Popen([str(SERVE_PYTHON), "-m", "bisenet_deploy.cli.serve", "run", str(repo),
                               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                               "--timeout", "90"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ready = threading.Event()

    def relay() -> None:  # the server's lines, printed as they come; never blocks the main thread
        for line in server.stdout:
            print("  " + line.rstrip(), flush=True)
            if "ready in" in line:
                ready.set()

    threading.Thread(target=relay, daemon=True).start()
    failures = 0
    try:
        deadline = time.monotonic() + 120
        while not ready.is_set() and server.poll() is None and time.monotonic() < deadline:
            ready.wait(0.2)
        if not ready.is_set():
            print("serve-demo: the server did not become ready (its log is above)", file=sys.stderr)
            return 1
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
            failures += len(frames) - same
            med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
            print(f"{url}: {same}/{len(frames)} held-out scenes with labels identical to the local Segmenter; "
                  f"median {med['remote']:.1f} ms end to end vs {med['local']:.1f} ms local")
            remote.close()  # an open keep-alive connection would hold the server's stop for its exit timeout
        local.close()
    finally:
        stop_process_group(server)  # bisenet-serve run stops Triton on SIGTERM
        print(f"server stopped (exit {server.returncode})")
    if failures:
        print(f"serve-demo: {failures} scene(s) differ between the server and the local Segmenter", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
