"""Benchmark building blocks on known inputs: statistics, warm-up, round order, Jetson
detection off a fake sysfs tree, fidelity accumulation, verdicts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bisenet_deploy.benchmarks import system
from bisenet_deploy.benchmarks.contestants import parse_torch_variant, recorded_checkpoint
from bisenet_deploy.benchmarks.harness import WarmUp, balanced_orders, run_rounds, warm_up
from bisenet_deploy.benchmarks.stats import is_stable, median_ratio, summarize, windows
from bisenet_deploy.benchmarks.verdicts import verdicts
from bisenet_deploy.errors import UserError
from bisenet_deploy.fileio import sha256_file
from bisenet_deploy.metrics import ComparisonAccumulator, compare_outputs
from bisenet_deploy.spec import ModelSpec


def test_summary_statistics_on_known_latencies():
    stats = summarize([i / 1000 for i in range(1, 11)])  # 1..10 ms
    assert stats.count == 10
    assert stats.mean == pytest.approx(5.5)
    assert stats.median == pytest.approx(5.5)
    assert stats.p90 == pytest.approx(9.1)  # linear interpolation: 9 + 0.1 * (10 - 9)
    assert stats.p99 == pytest.approx(9.91)
    assert (stats.min, stats.max) == (pytest.approx(1.0), pytest.approx(10.0))
    assert stats.std == pytest.approx(3.0276503540974917)  # sample std (ddof=1)
    single = summarize([0.004])
    assert single.std == 0.0 and single.p99 == pytest.approx(4.0)
    with pytest.raises(ValueError):
        summarize([])


def test_stability_ratios_and_windows():
    assert is_stable([10, 10, 10, 10.4, 10.3, 10.2], window=3, tolerance=0.05)
    assert not is_stable([20, 18, 16, 12, 11, 10], window=3, tolerance=0.05)
    assert not is_stable([10, 10, 10], window=3, tolerance=0.05)  # needs two full windows
    # per-round ratios: the slow second round (both sides 3x) does not move the median
    assert median_ratio([2.0, 6.0, 2.0], [1.0, 3.0, 1.0]) == pytest.approx(2.0)
    assert median_ratio([], []) is None
    # three samples finish at 1, 2.5 and 3.9 s after a 1 s call started at t=0
    wins = windows([1.0, 2.5, 3.9], [1.0, 1.5, 1.7], width=2.0)
    assert [(w["start_s"], w["count"]) for w in wins] == [(0.0, 1), (2.0, 2)]
    assert wins[1]["median_ms"] == pytest.approx(1600.0)


def test_warm_up_stops_once_stable_and_gives_up_at_the_cap():
    settling = iter([0.5, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    seconds, stable = warm_up(lambda: next(settling), WarmUp(min_runs=3, max_runs=10, window=2, tolerance=0.05))
    # medians of the last two vs the two before: 0.1 vs 0.15 after six calls, 0.1 vs 0.1 after seven
    assert stable and seconds == [0.5, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1]
    drifting = iter(float(i) for i in range(1, 100))
    seconds, stable = warm_up(lambda: next(drifting), WarmUp(min_runs=3, max_runs=7, window=2, tolerance=0.05))
    assert not stable and len(seconds) == 7


class _Recorder:
    """Stands in for a Runner: records the order in which run_rounds calls it."""

    def __init__(self, name, log):
        self.name, self.log, self.samples = name, log, []

    def call(self):
        self.log.append(self.name)
        return len(self.log)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_round_orders_balance_which_backend_runs_before_which(n):
    orders = balanced_orders(n)
    assert all(sorted(order) == list(range(n)) for order in orders)
    follows = Counter((a, b) for order in orders for a, b in zip(order, order[1:]))
    assert set(follows) == {(a, b) for a in range(n) for b in range(n) if a != b}
    assert len(set(follows.values())) == 1  # every ordered pair equally often


def test_rounds_call_every_runner_once_per_round_in_balanced_orders():
    log: list[str] = []
    runners = [_Recorder(n, log) for n in "abcd"]
    assert run_rounds(runners, rounds=5) == 5
    expected = [[runners[i].name for i in order] for order in balanced_orders(4)]
    assert [log[i : i + 4] for i in range(0, 20, 4)] == expected + expected[:1]
    assert all(len(r.samples) == 5 for r in runners)
    with pytest.raises(ValueError):
        run_rounds(runners)


def make_fake_jetson(root, locked: bool):
    """A sysfs/procfs tree shaped like a Jetson Orin's."""
    files = {
        "etc/nv_tegra_release": "# R36 (release), REVISION: 3.0, GCID: 1, BOARD: generic, EABI: aarch64\n",
        "proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
        "var/lib/nvpmodel/status": "pmode:0002 fmode:quiet\n",
        "etc/nvpmodel.conf": "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=2 NAME=30W >\n",
        "sys/class/devfreq/17000000.ga10b/cur_freq": "1300500000\n" if locked else "306000000\n",
        "sys/class/devfreq/17000000.ga10b/min_freq": "1300500000\n" if locked else "306000000\n",
        "sys/class/devfreq/17000000.ga10b/max_freq": "1300500000\n",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "sys/class/thermal/thermal_zone0/temp": "45500\n",
        "sys/class/thermal/thermal_zone1/type": "gpu-thermal\n",
        "sys/class/thermal/thermal_zone1/temp": "43000\n",
    }
    for cpu in range(2):
        files[f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq"] = "2201600\n"
        files[f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_min_freq"] = "2201600\n" if locked else "729600\n"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_jetson_detection_off_a_fake_sysfs_tree(tmp_path):
    unlocked = system.jetson_facts(make_fake_jetson(tmp_path / "a", locked=False))
    assert unlocked["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert unlocked["l4t"].startswith("R36 (release), REVISION: 3.0")
    assert unlocked["power_mode"] == {"id": 2, "name": "30W"}
    assert unlocked["clocks_locked"] is False and unlocked["gpu_clock_locked"] is False
    assert unlocked["gpu_frequency"] == {"cur_mhz": 306.0, "min_mhz": 306.0, "max_mhz": 1300.5}
    assert unlocked["temperatures_c"] == {"cpu-thermal": 45.5, "gpu-thermal": 43.0}
    assert any("jetson_clocks" in w for w in unlocked["warnings"])

    locked = system.jetson_facts(make_fake_jetson(tmp_path / "b", locked=True))
    assert locked["clocks_locked"] is True and locked["cpu_clocks_locked"] is True and not locked["warnings"]
    assert system.thermal_sample(tmp_path / "b")["gpu_mhz"] == 1300.5

    plain = tmp_path / "pc"
    (plain / "proc").mkdir(parents=True)
    (plain / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 3000\n")
    assert system.jetson_facts(plain) is None
    assert system.cpu_facts(plain)["model"] == "Test CPU 3000"


def test_fidelity_accumulator_equals_one_comparison_of_everything():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 4, 16, 20)).astype(np.float32)
    cand = ref + rng.normal(0, 0.3, ref.shape).astype(np.float32)
    ref_l, cand_l = ref.argmax(1), cand.argmax(1)
    acc = ComparisonAccumulator(4)
    for i in range(3):
        acc.add(ref_l[i], cand_l[i], ref[i], cand[i])
    whole = compare_outputs(ref_l, cand_l, 4, ref, cand)
    got = acc.result()
    assert got.label_agreement == pytest.approx(whole.label_agreement)
    assert got.miou_vs_reference == pytest.approx(whole.miou_vs_reference)
    assert got.max_abs_diff == pytest.approx(whole.max_abs_diff)
    assert got.mean_abs_diff == pytest.approx(whole.mean_abs_diff, rel=1e-5)
    assert 0 < got.label_agreement < 100
    acc.add(ref_l[0], cand_l[0])  # one side without logits: no logit figures at all
    assert acc.result().max_abs_diff is None


def test_recorded_checkpoint_is_used_only_with_a_matching_hash(tmp_path):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"weights v1")
    spec = ModelSpec(checkpoint_sha256=sha256_file(ckpt), extra={"checkpoint_path": str(ckpt)})
    assert recorded_checkpoint([("m.onnx", spec)])[0] == ckpt
    ckpt.write_bytes(b"weights v2")
    found, notes = recorded_checkpoint([("m.onnx", spec)])
    assert found is None and "SHA-256 differs" in notes[0]
    ckpt.unlink()
    found, notes = recorded_checkpoint([("m.onnx", spec)])
    assert found is None and "not on this machine" in notes[0]
    assert recorded_checkpoint([("x.onnx", ModelSpec())])[1] == ["no artifact records its source checkpoint"]


def test_torch_variant_parsing():
    assert parse_torch_variant("fp16+channels_last") == {"fp16": True, "bf16": False, "channels_last": True,
                                                         "cuda_graph": False}
    assert parse_torch_variant("bf16+channels_last")["bf16"]
    assert parse_torch_variant("cuda-graph")["cuda_graph"]
    with pytest.raises(UserError):
        parse_torch_variant("int4")


def _row(name, precision, backend, samples, agreement, e2e=None, infer=None, post=1.0):
    e2e = e2e or float(np.median(samples))
    return {
        "name": name, "precision": precision, "backend": backend, "role": "candidate", "samples_ms": samples,
        "fidelity": {"label_agreement": agreement}, "latency_ms": {"mean": float(np.mean(samples)), "std": 0.0},
        "segmenter_overhead_pct": None if infer is None else 100 * (e2e / infer - 1),
        "stages_ms": {"preprocess": 0.5, "postprocess": post}, "warmup_stable": True, "warmup_runs": 5,
    }


def _result(rows):
    return {
        "protocol": {"reference": {"notes": []}, "system": {"cpu": {"usable_cpus": 2}, "load_average": [0.1]}},
        "cells": [{"size": "512x512", "batch": 1, "rows": rows}],
    }


def test_verdicts_recommend_fp16_when_int8_is_not_worth_it():
    fp16 = _row("trt fp16", "fp16", "tensorrt", [10.0, 20.0, 10.0], 99.8)
    barely = _row("trt int8", "int8", "tensorrt", [9.5, 19.0, 9.5], 99.7)  # 5% faster in every round
    texts = [v["text"] for v in verdicts(_result([fp16, barely]))]
    assert any("less than 10% faster than FP16" in t and "recommend FP16" in t for t in texts)

    lossy = _row("trt int8", "int8", "tensorrt", [6.0, 12.0, 6.0], 97.5)  # fast but 2.3 points worse
    texts = [v["text"] for v in verdicts(_result([fp16, lossy]))]
    assert any("loses more than 1 point" in t and "recommend FP16" in t for t in texts)
    assert not any("less than 10% faster" in t for t in texts)

    good = _row("trt int8", "int8", "tensorrt", [6.0, 12.0, 6.0], 99.5)
    texts = [v["text"] for v in verdicts(_result([fp16, good]))]
    assert any("INT8 pays off over FP16" in t and "1.67x" in t for t in texts)
    assert not any("recommend" in t for t in texts)


def test_verdicts_flag_segmenter_overhead_noise_and_busy_machines():
    slow_post = _row("ort fp32", "fp32", "onnxruntime", [100.0, 100.0], 100.0, e2e=120.0, infer=100.0, post=15.0)
    noisy = _row("torch fp32", "fp32", "torch", [50.0, 150.0], 100.0)
    noisy["latency_ms"]["std"] = 70.0
    result = _result([slow_post, noisy])
    result["protocol"]["system"]["load_average"] = [3.5]
    texts = [v["text"] for v in verdicts(result)]
    assert any("20.0% over the raw backend call" in t and "postprocess" in t and "--argmax" in t for t in texts)
    assert any("torch fp32" in t and "noisy" in t for t in texts)
    assert any("machine was busy" in t for t in texts)


def test_int8_is_compared_on_its_own_backend_only():
    torch_fp16 = _row("torch fp16", "fp16", "torch", [10.0, 10.0], 99.9)
    ort_fp32 = _row("ort fp32", "fp32", "onnxruntime", [20.0, 20.0], 99.99)
    ort_int8 = _row("ort int8", "int8", "onnxruntime", [12.0, 12.0], 99.5)
    texts = [v["text"] for v in verdicts(_result([torch_fp16, ort_fp32, ort_int8]))]
    assert texts == ["INT8 pays off over FP32 (ort int8 vs ort fp32 at 512x512 batch 1: 1.67x, "
                     "label agreement 99.50% vs 99.99%)"]


def test_fastest_backend_verdict_never_prints_a_ratio_below_one():
    from bisenet_deploy.benchmarks.verdicts import backend_verdicts

    # "a" has the lower median latency, but "b" wins most rounds: per round b/a is 0.9 in
    # 6 rounds of 10 (a's slow spells land in other rounds). The verdict must name b.
    a = [10.0, 10.0, 10.0, 10.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    b = [11.0, 11.0, 11.0, 11.0, 27.0, 27.0, 27.0, 27.0, 27.0, 27.0]
    rows = [
        {"name": name, "backend": backend, "artifact": "m.onnx", "precision": "fp32", "samples_ms": samples,
         "latency_ms": {"median": median}, "fidelity": {"label_agreement": 100.0}}
        for name, backend, samples, median in (("a", "onnxruntime", a, 9.0), ("b", "openvino", b, 19.0))
    ]
    texts = [v["text"] for v in backend_verdicts({"size": "8x8", "batch": 1, "rows": rows})]
    fastest = next(t for t in texts if t.startswith("fastest for m.onnx"))
    assert fastest.startswith("fastest for m.onnx at 8x8 batch 1: b (") and "1.11x a" in fastest, fastest
    # close calls are called ties
    rows[1]["samples_ms"] = [x * 0.99 for x in a]
    texts = [v["text"] for v in backend_verdicts({"size": "8x8", "batch": 1, "rows": rows})]
    assert any("a tie on this machine" in t for t in texts), texts
