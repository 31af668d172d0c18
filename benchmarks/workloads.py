"""Workloads shaped like the paper's benchmarks, and the Hugging Face recipe to compare with.

Texts are synthetic (random words) but their token counts follow the real tasks: MMLU 5-shot
(a per-subject header of five solved questions, then each question with four letter choices),
HellaSwag (four ~20-token endings after a ~60-token context), BoolQ (a ~150-token passage,
two answers, scored again after "Answer:" for calibration).
"""

from __future__ import annotations

import random
from pathlib import Path
from dataclasses import replace

import torch

from llama_eval.model.llama import ModelArgs, build, init_random
from llama_eval.model.presets import preset
from llama_eval.requests import LoglikelihoodRequest as R

WORDS = ("the of and to in is was for on that with as by at from his her an which have are were be this one had "
         "but not they all their has been more who can will would there when what about time up out into other "
         "river king water city people music war energy cell market law court body light form power").split()

_REPO = Path(__file__).resolve().parents[1]
# The real LLaMA tokenizer when ../shared/data is beside the checkout, else the demo's small one
# (token ids then stay below its 320 pieces, but the model still has --vocab outputs, so the
# cost of the output layer is the real one).
DEFAULT_TOKENIZER = next(p for p in (_REPO.parent / "shared" / "data" / "tokenizer" / "tokenizer.model",
                                     _REPO / "llama_eval" / "data" / "demo" / "tokenizer.model") if p.exists())

SIZES = {
    # small enough for a 2-core CPU, but with the real vocabulary so output cost is realistic
    "small": replace(preset("tiny"), dim=256, n_layers=4, n_heads=8, n_kv_heads=8, multiple_of=64),
    # a width where the CPU's matrix products run near their peak (the scorer's FLOP-rate share)
    "medium": replace(preset("tiny"), dim=1024, n_layers=4, n_heads=16, n_kv_heads=16, multiple_of=256),
    "7b": preset("7b"),
    "tiny": preset("tiny"),  # the GPU check's dry run
}


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def mmlu(subjects: int, questions: int, seed: int = 0) -> list[R]:
    rng = random.Random(seed)
    reqs = []
    for s in range(subjects):
        header = f"The following are multiple choice questions (with answers) about subject {s}.\n\n"
        for _ in range(5):
            header += (_text(rng, 60).capitalize() + "?\n" + "".join(f"{c}. {_text(rng, 5)}\n" for c in "ABCD")
                       + f"Answer: {rng.choice('ABCD')}\n\n")
        for _ in range(questions):
            ctx = header + _text(rng, 60).capitalize() + "?\n" + "".join(f"{c}. {_text(rng, 5)}\n" for c in "ABCD") + "Answer:"
            reqs += [R(ctx, f" {c}") for c in "ABCD"]
    return reqs


def hellaswag(questions: int, seed: int = 1) -> list[R]:
    rng = random.Random(seed)
    reqs = []
    for _ in range(questions):
        ctx = _text(rng, 45).capitalize()
        reqs += [R(ctx, " " + _text(rng, 15) + ".") for _ in range(4)]
    return reqs


def boolq(questions: int, seed: int = 2) -> list[R]:
    rng = random.Random(seed)
    reqs = []
    for _ in range(questions):
        ctx = f"{_text(rng, 110).capitalize()}.\nQuestion: {_text(rng, 8)}?\nAnswer:"
        reqs += [R(ctx, " yes"), R(ctx, " no"), R("Answer:", " yes"), R("Answer:", " no")]
    return reqs


def long_context(questions: int, words: int = 1100, seed: int = 3) -> list[R]:
    """~1,500-token passages with two short answers: memory must not grow with context x vocabulary."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(questions):
        ctx = f"{_text(rng, words).capitalize()}.\nQuestion: {_text(rng, 8)}?\nAnswer:"
        reqs += [R(ctx, " yes"), R(ctx, " no")]
    return reqs


def random_model(size: str, vocab: int, device: str, dtype: torch.dtype, **overrides):
    """A model of SIZES[size] (with `overrides` of its ModelArgs) and seeded random weights."""
    args: ModelArgs = replace(SIZES[size], vocab_size=vocab, **overrides)
    if device == "cpu":
        return init_random(build(args, "cpu"), seed=0).to(dtype)
    model = build(args, device, dtype)
    with torch.no_grad():  # init on the device: a 7B model in float32 on the host is slow
        gen = torch.Generator(device=device).manual_seed(0)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, args.dim ** -0.5, generator=gen)
    return model


def to_hf(model, device: str, dtype: torch.dtype):
    """transformers' LlamaForCausalLM holding the same weights as our `model`.

    Hugging Face's attention rotates the two halves of each head instead of interleaved pairs,
    so wq/wk rows are permuted: within each head, the even rows go first, then the odd rows.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    a = model.args
    cfg = LlamaConfig(
        vocab_size=a.vocab_size, hidden_size=a.dim, intermediate_size=a.ffn_dim, num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads, num_key_value_heads=a.kv_heads, rms_norm_eps=a.norm_eps,
        rope_theta=a.rope_theta, max_position_embeddings=a.max_seq_len, tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    with torch.device("meta"):
        hf = LlamaForCausalLM(cfg)

    def permute(w: torch.Tensor, heads: int) -> torch.Tensor:
        d = w.shape[0] // heads
        return w.view(heads, d // 2, 2, -1).transpose(1, 2).reshape(w.shape)

    sd = {"model.embed_tokens.weight": model.tok_embeddings.weight, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.output.weight}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        att, ff = layer.attention, layer.feed_forward
        sd.update({
            p + "self_attn.q_proj.weight": permute(att.wq.weight, a.n_heads),
            p + "self_attn.k_proj.weight": permute(att.wk.weight, a.kv_heads),
            p + "self_attn.v_proj.weight": att.wv.weight, p + "self_attn.o_proj.weight": att.wo.weight,
            p + "mlp.gate_proj.weight": ff.w1.weight, p + "mlp.down_proj.weight": ff.w2.weight,
            p + "mlp.up_proj.weight": ff.w3.weight,
            p + "input_layernorm.weight": layer.attention_norm.weight,
            p + "post_attention_layernorm.weight": layer.ffn_norm.weight,
        })
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True, assign=True)
    with torch.device(device):  # its frequency buffers are not in the state dict: rebuild them for real
        hf.model.rotary_emb = type(hf.model.rotary_emb)(cfg)
    return hf.to(device=device, dtype=dtype).eval()


@torch.inference_mode()
def hf_recipe(hf, tokenizer, requests: list[R], batch_rows: int, device: str) -> tuple[list[float], int]:
    """The usual transformers scoring loop: one row per request, sorted by length, right-padded,
    full-vocabulary log-softmax over every position. Returns log-probs and tokens run (padding included)."""
    encoded = [tokenizer.encode_pair(r.context, r.continuation) for r in requests]
    order = sorted(range(len(requests)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    out = [0.0] * len(requests)
    tokens_run = 0
    for b in range(0, len(order), batch_rows):
        idx = order[b : b + batch_rows]
        seqs = [encoded[i][0] + encoded[i][1] for i in idx]
        width = max(len(s) for s in seqs) - 1
        ids = torch.full((len(idx), width), tokenizer.pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s) - 1] = torch.tensor(s[:-1])
            att[row, : len(s) - 1] = 1
        logp = torch.log_softmax(hf(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float(), dim=-1)
        tokens_run += ids.numel()
        for row, i in enumerate(idx):
            ctx, cont = encoded[i]
            pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=device)
            out[i] = logp[row, pos, torch.tensor(cont, device=device)].sum().item()
    return out, tokens_run
