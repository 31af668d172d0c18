"""Compiled elementwise kernels (Transformer.compile_elementwise, `--compile`): the same numbers
as the eager model, and the switch resolves as RunConfig.compile documents."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from llama_eval.cli import build_parser
from llama_eval.config import RunConfig
from llama_eval.engine import runner
from llama_eval.engine.generation import Generator
from llama_eval.engine.runner import Engine, use_compile
from llama_eval.engine.scoring import Scorer
from llama_eval.errors import UserError
from llama_eval.model.llama import EAGER, build, init_random
from llama_eval.model.presets import preset
from llama_eval.requests import GenerationRequest

from test_scoring import hellaswag_like, mmlu_like

needs_cxx = pytest.mark.skipif(runner.cpp_compiler() is None,
                               reason="torch.compile on the CPU needs a C++ compiler (none found as Inductor looks)")


def tiny(tok, kv_heads: int):
    args = replace(preset("tiny"), vocab_size=tok.vocab_size, max_seq_len=1024, n_kv_heads=kv_heads)
    return init_random(build(args, "cpu"), seed=3)


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    assert not counters["graph_break"], counters["graph_break"]  # each function compiles whole
    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
@needs_cxx
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["grouped-query", "multi-head"])
def test_compiled_scoring_equals_eager_with_one_compile_for_all_lengths(tiny_model_and_tokenizer, kv_heads):
    _, tok = tiny_model_and_tokenizer
    model = tiny(tok, kv_heads)
    reqs = mmlu_like() + hellaswag_like()
    lengths: set[int] = set()
    inner = model.hidden

    def spy(tokens, *a, **k):
        lengths.add(tokens.shape[1])
        return inner(tokens, *a, **k)

    model.hidden = spy
    budgets = (13, 37, 64, 101, 250)  # packed rows with a tree mask; a chunk and a remainder length each
    eager = [r for b in budgets for r in Scorer(model, tok, batch_tokens=b).loglikelihood(reqs)]
    model.compile_elementwise(True)
    before = graphs_compiled()
    compiled = [r for b in budgets for r in Scorer(model, tok, batch_tokens=b).loglikelihood(reqs)]
    assert model.elementwise_compiled
    assert max(abs(a.logprob - b.logprob) for a, b in zip(eager, compiled)) <= 1e-5
    assert [r.is_greedy for r in eager] == [r.is_greedy for r in compiled]
    # Many forward lengths, few compiles: the token dimension is dynamic (<= 2 graphs per
    # function: the dynamic one and PyTorch's N = 1 specialisation).
    assert len(lengths) >= 8
    assert graphs_compiled() - before <= 8
    model.compile_elementwise(False)
    model.compile_elementwise(True)  # switching back reuses this model's kernels
    again = Scorer(model, tok, batch_tokens=37).loglikelihood(reqs)
    assert [r.logprob for r in again] == [r.logprob for r in compiled[len(reqs) : 2 * len(reqs)]]
    assert graphs_compiled() - before <= 8


@pytest.mark.slow
@needs_cxx
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["grouped-query", "multi-head"])
def test_compiled_generation_gives_the_eager_text(tiny_model_and_tokenizer, kv_heads):
    _, tok = tiny_model_and_tokenizer
    model = tiny(tok, kv_heads)
    prompts = [GenerationRequest(p, max_new_tokens=n, until=("\n\n",))
               for p, n in [("Once upon a time", 24), ("The quick brown fox", 9), ("A", 17), ("Paris is", 30),
                            ("Once upon a time there was", 12)]]
    eager = Generator(model, tok, max_batch=4).generate(prompts)  # row buckets 4, 2 and 1 as rows finish
    model.compile_elementwise(True)
    assert Generator(model, tok, max_batch=4).generate(prompts) == eager
    with torch.no_grad():  # and the logits themselves, on a plain causal forward over two rows
        ids = torch.tensor([tok.encode("Once upon a time there", bos=True)] * 2)
        compiled = model(ids)
        model.compile_elementwise(False)
        assert (compiled - model(ids)).abs().max().item() <= 1e-5


@pytest.mark.slow
@needs_cxx
def test_run_with_compile_on_the_cpu(tmp_path, tiny_tokenizer_path):
    from conftest import SAMPLE_DATA
    from llama_eval.cli import main

    out = tmp_path / "run"
    argv = ["run", "--model", "random:tiny", "--tokenizer", str(tiny_tokenizer_path), "--tasks", "piqa",
            "--data-dir", str(SAMPLE_DATA), "--output", str(out), "--no-progress", "--limit", "3", "--no-cache"]
    assert main([*argv, "--compile"]) == 0
    compiled = (out / "summary.csv").read_text()
    assert json.loads((out / "run.json").read_text())["stats"]["elementwise_compiled"] is True
    assert main([*argv, "--overwrite"]) == 0  # auto: eager on the CPU
    assert (out / "summary.csv").read_text() == compiled  # same accuracies, same config hash
    assert json.loads((out / "run.json").read_text())["stats"]["elementwise_compiled"] is False


# --- fast: the switch ---------------------------------------------------------------------------


def test_compile_defaults_to_on_with_cuda_and_off_elsewhere(monkeypatch):
    import torch.utils._triton as triton

    assert use_compile(None, "cpu") is False
    assert use_compile(False, "cpu") is False
    monkeypatch.setattr(triton, "has_triton", lambda: True)
    assert use_compile(None, "cuda") is True
    assert use_compile(False, "cuda:1") is False
    monkeypatch.setattr(triton, "has_triton", lambda: False)
    assert use_compile(None, "cuda") is False  # auto: quietly eager without Triton
    with pytest.raises(UserError, match="--compile: torch.compile needs Triton"):
        use_compile(True, "cuda")


def test_compile_on_the_cpu_works_with_a_cxx_compiler_and_is_refused_without(monkeypatch):
    monkeypatch.setattr(runner, "cpp_compiler", lambda: "g++")
    assert use_compile(True, "cpu") is True
    monkeypatch.setattr(runner, "cpp_compiler", lambda: None)
    with pytest.raises(UserError, match="--compile on the CPU needs a C\\+\\+ compiler"):
        use_compile(True, "cpu")
    with pytest.raises(UserError, match="not meta"):
        use_compile(True, "meta")


def test_the_flag_reaches_the_model_through_the_engine(tiny_model_and_tokenizer, monkeypatch):
    _, tok = tiny_model_and_tokenizer
    parse = lambda *flags: build_parser().parse_args(["run", "--model", "m", "--tasks", "piqa", *flags])  # noqa: E731
    assert parse().compile is None and parse("--compile").compile is True and parse("--no-compile").compile is False
    monkeypatch.setattr(runner, "cpp_compiler", lambda: "g++")
    model, other = tiny(tok, 2), tiny(tok, 2)
    base = RunConfig(model="random:tiny", tasks=("piqa",))
    Engine(model, tok, replace(base, compile=True))  # compiling happens at the first forward, not here
    assert model.elementwise_compiled and not other.elementwise_compiled  # this model only
    assert all(m.elementwise is not EAGER for m in model.modules() if hasattr(m, "elementwise"))
    Engine(model, tok, base)  # auto on the CPU: eager again
    assert all(m.elementwise is EAGER for m in model.modules() if hasattr(m, "elementwise"))


def test_compile_is_not_part_of_the_config_hash():
    from llama_eval import evaluator
    from llama_eval.config import results_fields

    base = RunConfig(model="random:tiny", tasks=("piqa",))
    assert "compile" not in results_fields()
    assert evaluator.config_hash(replace(base, compile=True), "fp") == evaluator.config_hash(base, "fp")


def test_load_model_compiles_as_run_does(monkeypatch, tiny_tokenizer_path):
    """llama_eval.load_model (behind `llama-eval score` and `generate`) takes run's default: on
    the CPU eager unless asked; asked, compiled."""
    import llama_eval

    model, _ = llama_eval.load_model("random:tiny", tokenizer=str(tiny_tokenizer_path))
    assert not model.elementwise_compiled
    monkeypatch.setattr(runner, "cpp_compiler", lambda: "g++")
    model, _ = llama_eval.load_model("random:tiny", tokenizer=str(tiny_tokenizer_path), compile=True)
    assert model.elementwise_compiled
