"""Merge a GPU check run into ONE report file a user can attach to an issue.

    python scripts/gpu_check_report.py OUT_DIR [--seconds N]

Reads ``OUT_DIR/checks.json`` (bisenet_deploy.cli.gpu_check) and ``OUT_DIR/pytest.xml``
(pytest's JUnit XML of the ``gpu``/``tensorrt`` tests), adds versions and the device, and
writes ``OUT_DIR/gpu_check_report.json``: versions, device, pass/fail/skip per path with
its time, and one verdict. Prints the verdict; exit 0 only when nothing failed and
something ran.

    python scripts/gpu_check_report.py OUT_DIR --not-run "REASON"

writes the same file for a run that could not start (no usable GPU): verdict ``NOT RUN:
REASON``, the versions and device as far as they can be read, no paths; exit 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def pytest_paths(xml_path: Path) -> list[dict[str, Any]]:
    """One row per test case of a JUnit XML file (pass / fail / skip, seconds, reason)."""
    if not xml_path.is_file():
        return [{"name": "pytest -m 'gpu or tensorrt'", "status": "FAIL", "detail": "no JUnit XML written",
                 "seconds": 0.0}]
    rows = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        status, detail = "PASS", ""
        for tag, kind in (("failure", "FAIL"), ("error", "FAIL"), ("skipped", "SKIP")):
            node = case.find(tag)
            if node is not None:
                text = (node.get("message") or node.text or "").strip()
                status, detail = kind, text.splitlines()[0][:300] if text else ""
                break
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        rows.append({"name": name, "status": status, "detail": detail, "seconds": float(case.get("time") or 0)})
    return rows


def environment() -> dict[str, Any]:
    """Versions and the device, read without failing when a part is missing."""
    from bisenet_deploy.versions import tool_versions

    env: dict[str, Any] = {"platform": platform.platform(), "versions": tool_versions()}
    try:
        from bisenet_deploy.trt.cuda_buffers import cuda_versions, gpu_info, gpu_problem

        env["cuda"] = cuda_versions()
        env["gpu"] = gpu_info(0)
        env["gpu_problem"] = gpu_problem(0)
    except Exception as exc:  # noqa: BLE001 - the report is written regardless
        env["gpu_problem"] = f"{type(exc).__name__}: {exc}"
    try:
        from bisenet_deploy.trt.loading import flavour, load_tensorrt, logger_for, version_of

        trt = load_tensorrt("auto")
        env["tensorrt"] = {"package": flavour(trt), "version": version_of(trt),
                           "dla_cores": int(getattr(trt.Builder(logger_for(trt)), "num_DLA_cores", 0) or 0)}
    except Exception as exc:  # noqa: BLE001
        env["tensorrt"] = {"problem": str(exc).splitlines()[0]}
    release = Path("/etc/nv_tegra_release")  # Jetson: the L4T release JetPack is built on
    if release.is_file():
        env["l4t"] = release.read_text(errors="replace").splitlines()[0].strip()
    return env


def _write(out: Path, report: dict[str, Any]) -> Path:
    target = out / "gpu_check_report.json"
    tmp = target.with_name(target.name + ".tmp")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        tmp.replace(target)
    except OSError as exc:  # one line, not a traceback: the folder is the user's to fix
        sys.exit(f"gpu_check_report: error: cannot write {target}: {exc.strerror or exc}")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check_report", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=None, help="wall time of the whole run")
    p.add_argument("--not-run", metavar="REASON", help="nothing could run: write a report that says why")
    args = p.parse_args(argv)
    if args.not_run is not None:
        report = {"verdict": f"NOT RUN: {args.not_run}", "passed": False, "ran": False,
                  "wall_seconds": args.seconds, **environment(), "paths": []}
        target = _write(args.out, report)
        print(f"{report['verdict']}; report: {target}")
        return 2
    checks_path = args.out / "checks.json"
    checks = json.loads(checks_path.read_text()) if checks_path.is_file() else None
    paths = [{"name": r["name"], "status": r["status"], "detail": r["detail"], "seconds": r.get("seconds", 0.0),
              "figures": r.get("figures", {}), "source": "gpu_check"} for r in (checks or {}).get("results", [])]
    if checks is None:
        paths.append({"name": "bisenet_deploy.cli.gpu_check", "status": "FAIL", "detail": "no checks.json written",
                      "seconds": 0.0, "source": "gpu_check"})
    paths += [dict(row, source="pytest") for row in pytest_paths(args.out / "pytest.xml")]
    counts = {s: sum(1 for r in paths if r["status"] == s) for s in ("PASS", "FAIL", "SKIP")}
    passed = counts["FAIL"] == 0 and counts["PASS"] > 0
    verdict = (f"{'PASS' if passed else 'FAIL'}: {counts['PASS']} passed, {counts['FAIL']} failed, "
               f"{counts['SKIP']} skipped")
    if checks is not None and "UNTRAINED" in checks.get("verdict", ""):
        verdict += " [demo model is UNTRAINED: agreement figures are for plumbing, not fidelity]"
    report = {"verdict": verdict, "passed": passed, "ran": True, "wall_seconds": args.seconds, **environment(),
              "paths": paths}
    target = _write(args.out, report)
    for row in paths:
        if row["status"] == "FAIL":
            print(f"FAIL  {row['name']}: {row['detail']}")
    print(f"{verdict}; report: {target}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
