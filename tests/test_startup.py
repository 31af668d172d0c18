"""Start-up (issue 14.7): `llama-eval` imports only what a step needs, when it needs it.

Each check runs in a fresh interpreter (this one has imported everything already) and looks at
sys.modules. Speed itself is measured by benchmarks/bench_startup.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from llama_eval.model.checkpoint import _NoNormalOnMeta, meta_network
from llama_eval.model.llama import build
from llama_eval.model.presets import preset

from test_workflow import run_args, write_meta_checkpoint, write_piqa

REPO = Path(__file__).resolve().parents[1]
# Packages a run does not need before its first forward; each costs 0.2-1.5 s to import here.
NOT_BEFORE_FIRST_FORWARD = ("pandas", "datasets", "transformers", "safetensors", "sympy", "torch._dynamo",
                            "matplotlib", "huggingface_hub")

# Runs `llama-eval` in the child and stops it at the model's first forward, printing what is imported.
UNTIL_FIRST_FORWARD = r"""
import json, sys
from llama_eval.model import llama

def first_forward(*args, **kwargs):
    print(json.dumps(sorted(sys.modules)), flush=True)
    raise SystemExit(0)

llama.Transformer.hidden = first_forward
from llama_eval.cli import main
main(sys.argv[1:])
"""


def modules_after(code: str, *argv: str) -> set[str]:
    """The modules imported by `code` in a fresh interpreter (the code prints them as JSON)."""
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                         cwd=REPO)  # cwd first on sys.path: this checkout's llama_eval
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_imports_no_torch_and_no_heavy_package():
    modules = modules_after("import json, sys, llama_eval.cli; print(json.dumps(sorted(sys.modules)))")
    assert "llama_eval.cli" in modules
    assert sorted({"torch", *NOT_BEFORE_FIRST_FORWARD} & modules) == []


def test_a_run_reaches_its_first_forward_without_heavy_packages(tmp_path):
    # A checkpoint in Meta's layout: built on the meta device and given its tensors, as real models are.
    model = write_meta_checkpoint(tmp_path / "model", dim=64, layers=2)
    data = write_piqa(tmp_path / "data", 4)
    modules = modules_after(UNTIL_FIRST_FORWARD, *run_args(model, data, tmp_path / "out"), "--no-cache")
    assert {"torch", "llama_eval.evaluator", "llama_eval.tasks.piqa"} <= modules  # it got as far as the model
    assert sorted(set(NOT_BEFORE_FIRST_FORWARD) & modules) == []


def test_meta_network_is_the_built_network_without_values():
    args = preset("tiny")
    meta, built = meta_network(args), build(args, "cpu")
    assert [(n, p.shape, p.dtype) for n, p in meta.state_dict().items()] == \
        [(n, p.shape, p.dtype) for n, p in built.state_dict().items()]
    assert all(p.is_meta for p in meta.parameters())


def test_only_meta_tensors_skip_normal():
    with _NoNormalOnMeta():
        real = torch.zeros(1000)
        torch.nn.init.normal_(real)
        assert real.std() > 0.5
        real.zero_().normal_(mean=5.0)
        assert abs(real.mean() - 5.0) < 0.5
        meta = torch.empty(1000, device="meta")
        assert torch.nn.init.normal_(meta) is meta and meta.normal_() is meta
