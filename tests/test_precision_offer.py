"""'bf16 where it is free': the decision on real CPU flag sets, the bench verdict, the cached
measurement behind bisenet-infer's start line, and the comparison on real OpenVINO outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bisenet_deploy.benchmarks.verdicts import verdicts
from bisenet_deploy.machine import cpu_flags, cpu_kind, has_bf16
from bisenet_deploy.runtime import precision_offer as po

from .conftest import random_frame
from .test_bench_parts import _result, _row

# /proc/cpuinfo flags lines of real CPUs (abridged to the vector ISA part)
AVX2_EPYC = "fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand " \
            "hypervisor lahf_lm cmp_legacy abm sse4a fsgsbase bmi1 avx2 smep bmi2 erms rdseed adx clflushopt sha_ni"
ZEN4_EPYC = AVX2_EPYC + " avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi " \
                        "avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq avx_vnni"
SAPPHIRE_RAPIDS = AVX2_EPYC + " avx512f avx512dq avx512cd avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni " \
                              "avx512_fp16 amx_bf16 amx_tile amx_int8 tsxldtrk serialize"


def _flags(tmp_path, line: str, name: str) -> list[str]:
    root = tmp_path / name
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {line}\n")
    return cpu_flags(root)


DEMO = po.Measurement(exact_ms=82.2, bf16_ms=18.5, agreement=99.885, pixels=8 * 512 * 512)


def test_offer_only_on_cpus_with_bf16_and_only_when_agreement_and_speed_hold(tmp_path):
    avx2 = _flags(tmp_path, AVX2_EPYC, "avx2")
    zen4 = _flags(tmp_path, ZEN4_EPYC, "zen4")
    spr = _flags(tmp_path, SAPPHIRE_RAPIDS, "spr")
    assert (has_bf16(avx2), has_bf16(zen4), has_bf16(spr)) == (False, True, True)
    assert cpu_kind({"model": "AMD EPYC", "isa_flags": avx2, "usable_cpus": 2}) == "amd-epyc-avx2-2c"
    assert cpu_kind({"model": "Intel(R) Xeon(R) Platinum 8481C", "isa_flags": spr, "usable_cpus": 2}) == \
        "intel-r-xeon-r-platinum-8481c-amx-2c"

    assert po.offer(avx2, DEMO) is None  # no bf16 in hardware: nothing, whatever was measured
    assert "AVX512-BF16 nor AMX" in po.no_offer_reason(avx2)
    for flags in (zen4, spr):
        text = po.offer(flags, DEMO)
        assert "4.4x faster" in text and "99.885%" in text and "precision_hint': 'bf16'" in text
        assert po.no_offer_reason(flags) is None
    assert "int8+bf16" in po.offer(spr, DEMO, precision="int8")
    # below the agreement floor or not faster enough: nothing to offer
    assert po.offer(spr, po.Measurement(82.2, 18.5, 99.49, 100)) is None
    assert po.offer(spr, po.Measurement(82.2, 78.0, 99.9, 100)) is None
    assert po.offer(spr, None) is None


def _ov_rows(bf16_agreement: float):
    rows = [_row("ov fp32", "fp32", "openvino", [80.0, 84.0, 82.0], 100.0),
            _row("ov bf16", "bf16", "openvino", [18.0, 19.0, 18.5], bf16_agreement),
            _row("ov fp32 host-pre/post", "fp32", "openvino", [81.0, 85.0, 83.0], 100.0),
            _row("ov bf16 host-pre/post", "bf16", "openvino", [30.0, 31.0, 30.5], bf16_agreement)]
    for r in rows:
        r["artifact"] = "m.onnx"
        r["latency_ms"]["median"] = float(np.median(r["samples_ms"]))
    return rows


def test_bench_verdict_names_the_option_on_bf16_cpus_and_says_why_not_elsewhere(tmp_path):
    result = _result(_ov_rows(99.885))
    result["protocol"]["system"]["cpu"]["isa_flags"] = _flags(tmp_path, SAPPHIRE_RAPIDS, "spr")
    texts = [v["text"] for v in verdicts(result)]
    offers = [t for t in texts if "faster precision available" in t]
    # one line per artifact: the best free speed-up (in-graph pre/post here), with both options
    assert len(offers) == 1 and offers[0].startswith("ov bf16 vs ov fp32 at 512x512"), texts
    assert "4.4" in offers[0] and "--ov-hint bf16" in offers[0] and "precision_hint" in offers[0]

    result = _result(_ov_rows(99.2))  # bf16 loses too many labels: no offer
    result["protocol"]["system"]["cpu"]["isa_flags"] = _flags(tmp_path, ZEN4_EPYC, "zen4")
    assert not any("faster precision" in v["text"] for v in verdicts(result))

    fp32_only = [r for r in _ov_rows(99.9) if r["precision"] == "fp32"]
    result = _result(fp32_only)
    result["protocol"]["system"]["cpu"]["isa_flags"] = _flags(tmp_path, AVX2_EPYC, "avx2")
    texts = [v["text"] for v in verdicts(result)]
    assert any(t.startswith("no bf16 offer: this CPU has neither AVX512-BF16 nor AMX") for t in texts), texts
    result["protocol"]["system"]["cpu"]["isa_flags"] = _flags(tmp_path, ZEN4_EPYC, "zen4b")
    assert any("add --ov-hint bf16" in v["text"] for v in verdicts(result))


def test_start_line_costs_nothing_without_bf16_and_measures_once_with_it(export_model5, monkeypatch, tmp_path):
    path = export_model5()
    calls = []

    def fake_measure(p, threads=0, frames=None, calls_=po.CALLS):
        calls.append(p)
        return DEMO

    monkeypatch.setattr(po, "measure", fake_measure)
    monkeypatch.setenv("BISENET_DEPLOY_CACHE", str(tmp_path / "cache"))
    assert po.cached_offer(path, flags=_flags(tmp_path, AVX2_EPYC, "avx2")) is None
    assert calls == []  # no probing at all on a CPU without bf16
    spr = _flags(tmp_path, SAPPHIRE_RAPIDS, "spr")
    first = po.cached_offer(path, flags=spr)
    second = po.cached_offer(path, flags=spr)
    assert first == second and "4.4x faster" in first
    assert calls == [path]  # the second start reads the cache
    cached = json.loads((tmp_path / "cache" / po.CACHE_FILE).read_text())
    assert [r["agreement"] for r in cached.values()] == [99.885]


def test_bisenet_infer_start_line(export_model5, monkeypatch, tmp_path, capsys):
    from bisenet_deploy.cli.infer import main

    frame = tmp_path / "in" / "a.png"
    frame.parent.mkdir()
    import cv2

    cv2.imwrite(str(frame), random_frame(64, 128, 3))
    model = str(export_model5())
    monkeypatch.setattr(po, "measure", lambda *a, **k: DEMO)
    assert main([model, str(frame.parent), "-o", str(tmp_path / "out1"), "--backend", "onnxruntime"]) == 0
    if not has_bf16(cpu_flags()):  # this CPU: not a word about bf16
        assert "faster precision" not in capsys.readouterr().err
    monkeypatch.setattr("bisenet_deploy.machine.cpu_flags", lambda root="/": ["avx2", "avx512_bf16", "amx_bf16"])
    assert main([model, str(frame.parent), "-o", str(tmp_path / "out2"), "--backend", "onnxruntime"]) == 0
    err = capsys.readouterr().err
    assert "bisenet-infer: faster precision available: OpenVINO bf16 ran this model 4.4x faster" in err, err


def test_agreement_is_computed_on_real_outputs(export_model5):
    """The measurement's comparison on two real backends of one artifact: OpenVINO f32 against
    onnxruntime agrees on every pixel of real frames (a wrong frame order, label stage or
    pixel count in the comparison fails here, on any CPU)."""
    pytest.importorskip("openvino")
    from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from bisenet_deploy.runtime.backends.openvino import OpenVinoBackend

    path = export_model5()
    frames = [random_frame(64, 128, s) for s in range(3)]
    with OnnxRuntimeBackend(path, device="cpu") as exact, OpenVinoBackend(path, prepost="host", cache=False) as other:
        m = po.measure_backends(exact, other, frames, calls=1)
    assert m.pixels == 3 * 64 * 128
    assert m.agreement > 99.9 and m.exact_ms > 0 and m.bf16_ms > 0


def test_real_bf16_measurement_where_the_cpu_has_bf16(export_model5):
    if not has_bf16(cpu_flags()):
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: OpenVINO's bf16 hint cannot run faster here")
    pytest.importorskip("openvino")
    path = export_model5()
    m = po.measure(path, frames=[random_frame(64, 128, s) for s in range(3)], calls=1)
    assert m.pixels == 3 * 64 * 128
    # bf16 keeps most labels of a (seeded, untrained) tiny model; a broken bf16 path or
    # comparison (wrong frames, swapped outputs) would land far below
    assert 90.0 <= m.agreement <= 100.0
