"""The GPU check's dry run: every stage runs on the CPU with a small model and reports ok."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_completes_every_stage(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=900, env=env)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    stages = {l["stage"]: l for l in lines if "stage" in l}
    assert list(stages) == ["env", "correctness", "forward", "decode", "mmlu"], proc.stdout + proc.stderr
    assert all(l["status"] == "ok" for l in stages.values()), proc.stdout
    checks = {l["check"] for l in lines if "check" in l}
    assert {"versions", "attention kernels", "packed vs unshared", "attention: blocks vs dense",
            "packed vs per-request causal",
            "scoring forward at the MMLU shape", "decode step", "full MMLU end to end"} <= checks
    assert proc.returncode == 0
    assert (tmp_path / "gpu_check.jsonl").read_text().count("\n") == len(proc.stdout.splitlines())


def test_a_failing_or_hanging_stage_is_reported_not_waited_for(monkeypatch, capsys):
    """The driver kills a stage past its limit and reports a crashing one, then goes on."""
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    real = subprocess.Popen

    def fake(cmd, **kw):  # stand-in stages: one sleeps forever, one raises
        stage = cmd[cmd.index("--stage") + 1]
        code = {"env": "import time; print('{\"check\": \"x\", \"ok\": true}', flush=True); time.sleep(60)",
                "mmlu": "raise RuntimeError('boom')"}[stage]
        return real([sys.executable, "-c", code], **kw)

    monkeypatch.setattr(gpu_check.subprocess, "Popen", fake)
    hung = gpu_check.run_stage("env", dry=True, limit=3)
    crashed = gpu_check.run_stage("mmlu", dry=True, limit=30)
    assert hung["status"] == "timeout" and hung["s"] < 20
    assert crashed["status"] == "failed" and crashed["exit_code"] == 1 and "boom" in crashed["stderr_tail"]
    assert '{"check": "x", "ok": true}' in capsys.readouterr().out  # partial output came through
