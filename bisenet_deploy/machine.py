"""The CPU this process runs on: model, vendor, vector ISA flags, cores, clock, and the
theoretical peak those imply. NumPy-free; read from ``/proc`` and ``/sys`` (through a
``root`` folder, so tests can use a fake tree).

Used below everything that cares which kernels a CPU has: the runtime (backend choice, the
8-bit INT8 weight warning on CPUs without VNNI) and the benchmark (protocol, peaks).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

#: CPU flags that decide which kernels a runtime can use (and so which runtime is fastest).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "i8mm", "bf16")


def _read(root: str | Path, relative: str) -> str | None:
    try:
        return (Path(root) / relative.lstrip("/")).read_text(errors="replace").strip("\x00 \n\t")
    except OSError:
        return None


def _cpuinfo_field(cpuinfo: str, *keys: str) -> str | None:
    for key in keys:
        match = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return None


def cpu_flags(root: str | Path = "/") -> list[str]:
    """The ISA_FLAGS this CPU reports in /proc/cpuinfo (x86 ``flags``, Arm ``Features``)."""
    text = _cpuinfo_field(_read(root, "proc/cpuinfo") or "", "flags", "Features")
    have = set(text.split()) if text else set()
    return [f for f in ISA_FLAGS if f in have]


def has_int8_dot_product(flags: list[str]) -> bool:
    """VNNI / AMX on x86 (int8 dot products without the int16 saturation of AVX2's
    ``vpmaddubsw``), dot-product instructions on Arm."""
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"))


def has_bf16(flags: list[str]) -> bool:
    """bf16 arithmetic in hardware (AVX512-BF16 dot products or AMX-BF16 tiles): where
    OpenVINO's ``bf16`` precision hint runs faster instead of emulating it."""
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def cpu_kind(facts: dict[str, Any] | None = None) -> str:
    """What benchmark results are named after: the CPU model, its best int8 ISA and the
    usable CPUs, e.g. ``amd-epyc-avx2-2c`` or ``intel-xeon-platinum-8481c-amx-2c``."""
    facts = cpu_facts() if facts is None else facts
    flags = facts.get("isa_flags") or []
    isa = ("amx" if "amx_int8" in flags else "avx512-vnni" if "avx512_vnni" in flags
           else "avx2" if "avx2" in flags else "base")
    model = re.sub("[^a-z0-9]+", "-", str(facts.get("model") or "cpu").lower()).strip("-")
    return f"{model}-{isa}-{facts.get('usable_cpus') or usable_cpus()}c"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores(root: str | Path = "/") -> int:
    """Cores (not hardware threads) among the CPUs this process may use: two hyperthreads
    share one core's vector units."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        core = _read(root, f"sys/devices/system/cpu/cpu{cpu}/topology/core_id")
        package = _read(root, f"sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id")
        cores.add((package, core) if core is not None else ("cpu", cpu))
    return max(1, len(cores))


def clock_ghz(root: str | Path = "/") -> tuple[float | None, str]:
    """(GHz, where it was read): the highest frequency cpufreq allows, else what
    /proc/cpuinfo reports (in a VM usually the nominal clock; turbo is not visible)."""
    khz = _read(root, "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if khz and khz.isdigit():
        return int(khz) / 1e6, "cpufreq maximum"
    mhz = _cpuinfo_field(_read(root, "proc/cpuinfo") or "", "cpu MHz")
    try:
        return (float(mhz) / 1e3, "/proc/cpuinfo cpu MHz") if mhz else (None, "unknown")
    except ValueError:
        return None, "unknown"


def cpu_facts(root: str | Path = "/") -> dict[str, Any]:
    """CPU model, vendor, logical CPUs visible to this process, cores, clock, ISA flags."""
    cpuinfo = _read(root, "proc/cpuinfo") or ""
    model = _cpuinfo_field(cpuinfo, "model name", "Model", "Hardware", "cpu model")
    ghz, clock_source = clock_ghz(root)
    return {
        "model": model or platform.processor() or platform.machine(),
        "vendor": _cpuinfo_field(cpuinfo, "vendor_id", "CPU implementer"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "physical_cores": physical_cores(root),
        "clock_ghz": None if ghz is None else round(ghz, 3),
        "clock_source": clock_source,
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "isa_flags": cpu_flags(root),
    }


def ops_per_cycle(facts: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Per core and cycle, by precision: (operations, the units assumed). An estimate from
    the flags: x86 cores are assumed to have two vector FMA units, 512 bits wide where
    AVX-512 is reported, except AMD's (Zen 4 runs AVX-512 on 256-bit units)."""
    flags = set(facts.get("isa_flags") or [])
    amd = (facts.get("vendor") or "").lower().startswith("authenticamd") or "amd" in str(facts.get("model")).lower()
    out: dict[str, tuple[int, str]] = {}
    if "avx512f" in flags:
        width = 256 if amd else 512
    elif "avx2" in flags and "fma" in flags:
        width = 256
    elif "asimd" in flags:
        out["fp32"] = (16, "2 x 128-bit NEON FMA")  # 2 units x 4 lanes x 2 (multiply + add)
        if "asimddp" in flags or "i8mm" in flags:
            out["int8"] = (64, "2 x 128-bit SDOT")
        return out
    else:
        return out
    lanes = width // 32
    out["fp32"] = (2 * lanes * 2, f"2 x {width}-bit FMA")
    if {"avx512_vnni", "avx_vnni"} & flags:
        vnni_width = 256 if amd or "avx512_vnni" not in flags else width
        out["int8"] = (2 * (vnni_width // 32) * 4 * 2, f"2 x {vnni_width}-bit VNNI (4 int8 MACs per lane)")
    if "avx512_bf16" in flags:
        out["bf16"] = (2 * lanes * 2 * 2, f"2 x {width}-bit BF16 dot products")
    if "amx_int8" in flags:
        out["int8"] = (2048, "AMX TMUL (1024 int8 MACs)")
    if "amx_bf16" in flags:
        out["bf16"] = (1024, "AMX TMUL (512 bf16 MACs)")
    return out


def theoretical_peaks(facts: dict[str, Any], threads: int | None = None) -> dict[str, dict[str, Any]]:
    """GOP/s by precision for ``threads`` threads (at most one per physical core):
    cores x GHz x operations per cycle. None values where the clock is not visible."""
    cores = min(threads or facts.get("physical_cores") or 1, facts.get("physical_cores") or 1)
    ghz = facts.get("clock_ghz")
    out = {}
    for precision, (ops, units) in ops_per_cycle(facts).items():
        out[precision] = {
            "gops": None if ghz is None else round(cores * ghz * ops, 1),
            "formula": f"{cores} cores x {ghz or '?'} GHz ({facts.get('clock_source')}) x {ops} ops/cycle ({units})",
        }
    return out
