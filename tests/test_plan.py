"""`llama-eval plan` against memory worked out by hand from Meta's published configurations."""

from __future__ import annotations

import json
import shutil

import pytest

from llama_eval.errors import UserError
import torch

from llama_eval.cli import main
from llama_eval.model.llama import build, count_parameters
from llama_eval.model.presets import preset
from llama_eval.parallel_plan import GIB, cmd_plan_text, plan_memory

from conftest import TINY_TOKENIZER as TOKENIZER  # noqa: E402


def cache_bytes(name: str, rows: int, slots: int) -> int:
    """Bytes of the KV cache the model itself allocates (on the meta device: shapes, no memory)."""
    model = build(preset(name), "meta", torch.bfloat16)
    cache = model.new_cache(rows, slots)
    return cache.k.nbytes + cache.v.nbytes


def test_7b_on_one_gpu():
    # LLaMA-7B: dim 4096, 32 layers, 32 heads of 128, FFN 11008, vocabulary 32000, window 2048.
    params = 32000 * 4096 * 2 + 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) + 4096
    assert params == 6_738_415_616  # the published parameter count
    assert params == count_parameters(build(preset("7b"), "meta", torch.bfloat16))
    activations = 6 * 4096 * 4096 * 4 + 3 * 4096 * 11008 * 2 + 4096 * (2048 + 4096) + 2 * 512 * 32000 * 4
    want = {"weights": 2 * params, "kv_scoring": cache_bytes("7b", 1, 2048 + 4096),
            "kv_generation": cache_bytes("7b", 32, 2048), "activations": activations, "overhead": 3 * GIB // 2}
    report = plan_memory("7b", gpus=1, gpu_memory_gb=80, batch_tokens=4096)
    assert report["per_rank"] == {**want, "total": sum(want.values())}
    assert report["per_rank"]["kv_generation"] == 32 * GIB
    assert (report["tp"], report["dp"], report["fits"], report["parameters"]) == (1, 1, True, params)
    assert not plan_memory("7b", gpus=1, gpu_memory_gb=40, batch_tokens=4096)["fits"]  # 49.8 GiB


def test_65b_on_eight_gpus_chooses_tp4():
    # LLaMA-65B: dim 8192, 80 layers, 64 heads of 128, FFN 22016, vocabulary 32000.
    C, L, F, V = 8192, 80, 22016, 32000
    assert 80 * (4 * C * C + 3 * C * F + 2 * C) + 2 * V * C + C == 65_285_660_672
    per_rank = V * C + L * (4 * C * C // 4 + 3 * C * F // 4 + 2 * C) + C + V * C // 4  # embedding whole
    activations = 6 * 4096 * C * 4 + 3 * 4096 * (F // 4) * 2 + 4096 * 6144 + 2 * 512 * (V // 4) * 4
    # Tensor parallelism over 4 splits the 64 key/value heads evenly: a quarter of the whole cache.
    want = {"weights": 2 * per_rank, "kv_scoring": cache_bytes("65b", 1, 6144) // 4,
            "kv_generation": cache_bytes("65b", 32, 2048) // 4, "activations": activations, "overhead": 3 * GIB // 2}
    report = plan_memory("65b", gpus=8, gpu_memory_gb=80, batch_tokens=4096)
    assert (report["tp"], report["dp"], report["fits"], report["chosen"]) == (4, 2, True, "smallest that fits")
    assert report["per_rank"] == {**want, "total": sum(want.values())}
    assert round(report["per_rank"]["total"] / GIB, 2) == 76.95
    assert [(a["tp"], a["fits"]) for a in report["alternatives"]] == [(1, False), (2, False), (4, True), (8, True)]
    # A smaller generation batch lets two GPUs hold one copy: 61.0 + 5 + 7.5 + 1.1 + 1.5 GiB.
    assert plan_memory("65b", gpus=8, gpu_memory_gb=80, batch_tokens=4096, max_batch=2)["tp"] == 2


def test_default_batch_tokens_is_the_scorers():
    # The scorer packs twice the model width per forward, at most 4,096 tokens.
    assert plan_memory("7b", gpus=1, gpu_memory_gb=80)["batch_tokens"] == 4096
    assert plan_memory("65b", gpus=8, gpu_memory_gb=80)["batch_tokens"] == 4096


def test_given_tp_and_invalid_tp():
    report = plan_memory("65b", gpus=8, gpu_memory_gb=80, tp=8)
    assert (report["tp"], report["dp"], report["chosen"]) == (8, 1, "given")
    with pytest.raises(UserError, match="use one of 1, 2, 4"):
        plan_memory("33b", gpus=8, gpu_memory_gb=80, tp=8)  # 52 heads
    with pytest.raises(UserError, match="unknown model preset '65B'"):
        plan_memory("65B", gpus=8, gpu_memory_gb=80)


def test_nothing_fits_says_how_to_fit():
    text = cmd_plan_text("65b", gpus=1, gpu_memory=80)
    assert "does NOT fit" in text and "smaller --max-batch" in text


def test_checkpoint_folder_is_planned_without_reading_weights(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 4,
                                                      "multiple_of": 32, "norm_eps": 1e-5, "vocab_size": -1}))
    (tmp_path / "consolidated.00.pth").write_bytes(b"")  # not a state dict: reading it would fail
    shutil.copy(TOKENIZER, tmp_path / "tokenizer.model")
    report = plan_memory(str(tmp_path), gpus=2, gpu_memory_gb=2, batch_tokens=16, max_batch=1)
    # 320 tokens x 64; FFN 192; kv heads 4 of 8 over 2 ranks; float32 parameters in bf16.
    per_rank = 320 * 64 + 2 * (64 * 32 * 2 + 64 * 16 * 2 + 64 * 96 * 3 + 2 * 64) + 64 + 160 * 64
    assert report["tp"] == 1
    assert plan_memory(str(tmp_path), gpus=2, gpu_memory_gb=1, tp=2)["per_rank"]["weights"] == 2 * per_rank


def test_plan_budgets_generation_only_for_generation_tasks(capsys):
    scoring = plan_memory("7b", gpus=1, gpu_memory_gb=24, tasks=["mmlu"])
    assert scoring["per_rank"]["kv_generation"] == 0 and scoring["fits"] and scoring["max_batch_fits"] is None
    assert main(["plan", "--model", "7b", "--gpus", "1", "--gpu-memory", "24", "--tasks", "mmlu"]) == 0
    out = capsys.readouterr().out
    assert "none: no generation task among mmlu" in out and "of 24 GiB: fits" in out

    both = plan_memory("7b", gpus=1, gpu_memory_gb=24, tasks=["mmlu", "gsm8k"])
    assert not both["fits"]
    # The largest generation batch that fits is the one the memory allows, to the row.
    room = 24 * GIB - (both["per_rank"]["total"] - both["per_rank"]["kv_generation"])
    row = cache_bytes("7b", 1, 2048)
    assert both["max_batch_fits"] == room // row == 6
    assert plan_memory("7b", gpus=1, gpu_memory_gb=24, tasks=["gsm8k"], max_batch=6)["fits"]
    assert not plan_memory("7b", gpus=1, gpu_memory_gb=24, tasks=["gsm8k"], max_batch=7)["fits"]
    assert main(["plan", "--model", "7b", "--gpus", "1", "--gpu-memory", "24", "--tasks", "mmlu,gsm8k"]) == 1
    assert "largest --max-batch that fits: 6" in capsys.readouterr().out
