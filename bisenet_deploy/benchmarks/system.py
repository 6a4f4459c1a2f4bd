"""Facts about the machine a benchmark ran on: CPU, GPU, versions, memory, Jetson state.

Everything is read defensively (a missing file or tool gives ``None``, never an error), and
every sysfs/procfs read goes through a ``root`` folder so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..machine import cpu_facts, cpu_flags, theoretical_peaks  # noqa: F401 - re-exported
from ..versions import tool_versions

# GPU devfreq node names on Jetson boards (TX2 gp10b, Xavier gv11b, Orin ga10b, Nano gm20b).
_JETSON_GPU_NAMES = ("gpu", "ga10b", "gv11b", "gp10b", "gm20b")


def _read(root: str | Path, relative: str) -> str | None:
    try:
        return (Path(root) / relative.lstrip("/")).read_text(errors="replace").strip("\x00 \n\t")
    except OSError:
        return None


def _read_int(root: str | Path, relative: str) -> int | None:
    text = _read(root, relative)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def _run(command: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- CPU and memory -------------------------------------------------------------------------


def rss_bytes() -> int | None:
    """Resident set size of this process now."""
    text = _read("/", "proc/self/statm")
    if text:
        return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


def _vm_hwm() -> int | None:
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _read("/", "proc/self/status") or "", re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


class PeakRss:
    """Peak resident memory of one stretch of this process (a backend's first calls).

    Linux keeps the peak (VmHWM) and lets a process reset it to the current RSS by writing
    5 to /proc/self/clear_refs, so transient allocations that are freed again (PyTorch's
    activations) count as well as arenas that stay (onnxruntime's). Elsewhere only the RSS
    after the stretch is seen.
    """

    def __init__(self) -> None:
        self.process_peak = _vm_hwm() or 0
        self._exact = False

    def start(self) -> None:
        self.process_peak = max(self.process_peak, _vm_hwm() or 0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._exact = _vm_hwm() is not None
        except OSError:
            self._exact = False

    def stop(self) -> int | None:
        """Peak RSS since ``start`` (or the RSS now where the peak cannot be reset)."""
        peak = _vm_hwm() if self._exact else rss_bytes()
        self.process_peak = max(self.process_peak, peak or 0)
        return peak

    def overall(self) -> int | None:
        """Peak RSS of the whole process so far."""
        return max(self.process_peak, _vm_hwm() or 0) or None


def measure_cpu_peak_gflops(n: int = 1536, repeats: int = 5) -> float:
    """fp32 matmul throughput of this CPU in GFLOP/s (best of ``repeats`` NumPy sgemm runs).

    A practical peak: what a well-tuned BLAS reaches with the threads NumPy uses, which is
    what a convolution library can hope for too.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # BLAS thread start-up and page faults stay out of the timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


# --- GPU ------------------------------------------------------------------------------------


def gpu_facts() -> dict[str, Any] | None:
    """Name, driver, memory and CUDA versions of GPU 0; None without an NVIDIA GPU.

    Uses torch when it is already imported (no extra start-up cost), else nvidia-smi.
    """
    facts: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(
            name=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            memory_mb=round(props.total_memory / 2**20),
            cuda_torch=torch.version.cuda,
            cudnn=str(torch.backends.cudnn.version()),
        )
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"])
    if smi:
        name, driver, memory = [p.strip() for p in smi.splitlines()[0].split(",")][:3]
        facts.setdefault("name", name)
        facts["driver"] = driver
        facts.setdefault("memory_mb", int(float(memory)) if memory.replace(".", "").isdigit() else memory)
    if "name" not in facts:
        return None
    runtime = cuda_runtime_version()
    if runtime:
        facts["cuda_runtime"] = runtime
    return facts


def cuda_runtime_version() -> str | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    try:
        err, version = cudart.cudaRuntimeGetVersion()
    except Exception:  # noqa: BLE001 - no driver, no device
        return None
    if int(err) != 0:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def gpu_used_bytes() -> int | None:
    """Device memory in use on GPU 0 (all processes), for before/after differences."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return int(total - free)
    try:
        from cuda.bindings import runtime as cudart

        err, free, total = cudart.cudaMemGetInfo()
        if int(err) == 0:
            return int(total - free)
    except Exception:  # noqa: BLE001
        pass
    return None


# --- temperatures and Jetson ----------------------------------------------------------------


def temperatures(root: str | Path = "/") -> dict[str, float]:
    """{thermal zone type: degrees C} from ``/sys/class/thermal``."""
    out: dict[str, float] = {}
    base = Path(root) / "sys/class/thermal"
    for zone in sorted(base.glob("thermal_zone*")):
        name = _read(zone, "type") or zone.name
        milli = _read_int(zone, "temp")
        if milli is not None and milli > -273000:
            out[name if name not in out else f"{name}.{zone.name}"] = milli / 1000.0
    return out


def _jetson_gpu_devfreq(root: str | Path) -> Path | None:
    base = Path(root) / "sys/class/devfreq"
    for node in sorted(base.glob("*")):
        if any(tag in node.name.lower() for tag in _JETSON_GPU_NAMES):
            return node
    return None


def _power_mode(root: str | Path) -> dict[str, Any] | None:
    """nvpmodel mode: id from its status file, name from nvpmodel.conf (or ``nvpmodel -q``)."""
    status = _read(root, "var/lib/nvpmodel/status")
    mode_id = None
    if status:
        match = re.search(r"pmode:(\d+)", status)
        mode_id = int(match.group(1)) if match else None
    names = {}
    for conf in ("etc/nvpmodel.conf", "etc/nvpmodel/nvpmodel.conf"):
        text = _read(root, conf)
        if text:
            names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", text)}
            break
    if mode_id is None and Path(root) == Path("/"):
        query = _run(["nvpmodel", "-q"])
        if query:
            match = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", query)
            if match:
                return {"id": int(match.group(2)), "name": match.group(1)}
    if mode_id is None:
        return None
    return {"id": mode_id, "name": names.get(mode_id)}


def _cpu_clocks_locked(root: str | Path) -> bool | None:
    """jetson_clocks raises every CPU's minimum frequency to its maximum."""
    verdicts = []
    for cpu in sorted((Path(root) / "sys/devices/system/cpu").glob("cpu[0-9]*")):
        low = _read_int(cpu, "cpufreq/scaling_min_freq")
        high = _read_int(cpu, "cpufreq/cpuinfo_max_freq") or _read_int(cpu, "cpufreq/scaling_max_freq")
        online = _read_int(cpu, "online")
        if low is None or high is None or online == 0:
            continue
        verdicts.append(low >= high)
    return all(verdicts) if verdicts else None


def gpu_frequency(root: str | Path = "/") -> dict[str, float] | None:
    """Jetson GPU clock (MHz): current, min and max of its devfreq node."""
    node = _jetson_gpu_devfreq(root)
    if node is None:
        return None
    values = {k: _read_int(node, f"{k}_freq") for k in ("cur", "min", "max")}
    if values["cur"] is None:
        return None
    return {f"{k}_mhz": v / 1e6 for k, v in values.items() if v is not None}


def jetson_facts(root: str | Path = "/") -> dict[str, Any] | None:
    """Board, L4T release, power mode, clock lock state, GPU clock and temperatures of a
    Jetson; None on anything else."""
    release = _read(root, "etc/nv_tegra_release")
    model = _read(root, "proc/device-tree/model")
    compatible = _read(root, "proc/device-tree/compatible") or ""
    is_jetson = release is not None or "jetson" in (model or "").lower() or "nvidia,tegra" in compatible
    if not is_jetson:
        return None
    gpu = gpu_frequency(root)
    gpu_locked = None
    if gpu and "min_mhz" in gpu and "max_mhz" in gpu:
        gpu_locked = gpu["min_mhz"] >= gpu["max_mhz"]
    cpu_locked = _cpu_clocks_locked(root)
    known = [v for v in (gpu_locked, cpu_locked) if v is not None]
    locked = all(known) if known else None
    facts = {
        "model": model,
        "l4t": release.splitlines()[0].lstrip("# ").strip() if release else None,
        "power_mode": _power_mode(root),
        "clocks_locked": locked,
        "gpu_clock_locked": gpu_locked,
        "cpu_clocks_locked": cpu_locked,
        "gpu_frequency": gpu,
        "temperatures_c": temperatures(root),
        "warnings": [],
    }
    if locked is False:
        facts["warnings"].append(
            "Jetson clocks are not locked (run `sudo jetson_clocks`): DVFS changes clocks during the run, "
            "so latencies depend on load history"
        )
    elif locked is None:
        facts["warnings"].append("could not tell whether Jetson clocks are locked (devfreq/cpufreq unreadable)")
    return facts


def thermal_sample(root: str | Path = "/") -> dict[str, Any]:
    """What sustained runs record per window: temperatures and (Jetson) GPU clock."""
    sample: dict[str, Any] = {"temperatures_c": temperatures(root)}
    gpu = gpu_frequency(root)
    if gpu:
        sample["gpu_mhz"] = gpu.get("cur_mhz")
    return sample


def system_facts(root: str | Path = "/", want_gpu: bool = True) -> dict[str, Any]:
    """Everything the protocol header shows about the machine and the software on it."""
    return {
        "hostname": platform.node(),
        "cpu": cpu_facts(root),
        "gpu": gpu_facts() if want_gpu else None,
        "jetson": jetson_facts(root),
        "memory_total_mb": _memory_total_mb(root),
        "versions": tool_versions("numpy", "opencv", "torch", "onnx", "onnxruntime", "openvino", "tensorrt",
                                  "tensorrt_rtx", "cuda-python"),
        "temperatures_c": temperatures(root),
        "load_average": _load_average(),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _memory_total_mb(root: str | Path) -> int | None:
    text = _read(root, "proc/meminfo") or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None
