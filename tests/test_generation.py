"""The batched generator against the plainest reference: a loop of full forwards, no cache."""

from __future__ import annotations

import copy
import random
from dataclasses import replace

import pytest
import torch

from llama_eval.engine.generation import Generator, _choose_tokens, _CompletionText, _uniform, _mix32
from llama_eval.errors import UserError
from llama_eval.model.tokenizer import Tokenizer
from llama_eval.requests import GenerationRequest as G

PROMPTS = [
    "The quick brown fox",
    "Question: What is the capital of France? Answer:",
    "",
    "Once upon a time there was a little girl named Lily. She liked to play in the park. One day",
    "def add(a, b):\n   ",
    "Q: Who wrote the book the origin of species?\nA:",
]


def without_eos(tok):
    """The tokenizer with an EOS id no token has: rows end only by length or stop string."""
    tok = copy.copy(tok)
    tok.eos_id = -1
    return tok


def naive(model, tok, req: G, window: int) -> tuple[list[int], str]:
    """Greedy tokens and completion from one full forward per new token, no cache, no batch."""
    ids = tok.encode(req.prompt, bos=True)
    ids = ids[-(window - req.max_new_tokens):]
    new: list[int] = []
    text = ""
    for _ in range(req.max_new_tokens):
        with torch.no_grad():
            token = int(model(torch.tensor([ids + new]))[0, -1].argmax())
        if token == tok.eos_id:
            break
        new.append(token)
        full, head = tok.decode(ids + new), tok.decode(ids)
        assert full.startswith(head)
        text = full[len(head):]
        if any(s in text for s in req.until):
            break
    found = [i for i in (text.find(s) for s in req.until) if i >= 0]
    return new, text[: min(found)] if found else text


@pytest.mark.parametrize("prefill_tokens", [1, 4096])  # prompts prefilled one at a time, or together
def test_greedy_equals_naive_loop_and_one_at_a_time(tiny_model_and_tokenizer, prefill_tokens):
    model, tok = tiny_model_and_tokenizer
    reqs = [G(p, until=("\n",) if i % 2 else (), max_new_tokens=3 + 2 * i) for i, p in enumerate(PROMPTS)]
    batched = Generator(model, tok, max_batch=4, prefill_tokens=prefill_tokens).generate(reqs)
    alone = [Generator(model, tok, max_batch=1).generate([r])[0] for r in reqs]
    window = model.args.max_seq_len
    for req, b, a in zip(reqs, batched, alone):
        expected = naive(model, tok, req, window)[1]
        assert b.completions == a.completions == (expected,)
        assert not b.truncated


def test_rows_are_refilled_as_requests_finish(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    tok = without_eos(tok)
    reqs = [G(PROMPTS[0], max_new_tokens=30)] + [G(p, max_new_tokens=2) for p in PROMPTS[1:4]]
    gen = Generator(model, tok, max_batch=2)
    finished = [i for i, _ in gen.iter_generate(reqs)]
    # Row 1 serves the three short requests one after another while row 0 runs the long one.
    assert finished == [1, 2, 3, 0]
    assert gen.stats.decode_steps == 30
    assert gen.stats.generated_tokens == 30 + 3 * 2
    results = Generator(model, tok, max_batch=2).generate(reqs)
    for req, res in zip(reqs, results):
        assert res.completions == (naive(model, tok, req, model.args.max_seq_len)[1],)
    assert gen.generate([]) == []


def test_decode_runs_only_the_live_rows_bucket(tiny_model_and_tokenizer):
    """As rows finish, steps run 8, then 4, then 1 row, live rows moving down; results unchanged."""
    model, tok = tiny_model_and_tokenizer
    tok = without_eos(tok)
    lengths = (2, 20, 4, 9)  # rows 0..3 (samples in 4, 5); row 1 outlives the others and moves down
    greedy = [G(p, max_new_tokens=m) for p, m in zip(PROMPTS[:4], lengths)]
    sampled = [G(PROMPTS[4], temperature=0.8, seed=3, n=2, max_new_tokens=15)]
    gen = Generator(model, tok, max_batch=8)
    res = gen.generate(greedy + sampled)
    # Six live rows (two samples) need the bucket of 8 for steps 1-4 (five after step 2), then
    # four or three fit 4 rows for steps 5-15 (row 1 ends after 9, the samples after 15), then
    # the long row alone runs in a bucket of 1 for steps 16-20.
    assert gen.stats.decode_steps == 20
    assert gen.stats.decode_rows == 4 * 8 + 11 * 4 + 5 * 1
    assert gen.stats.rows_moved >= 2
    for req, r in zip(greedy, res):
        assert r.completions == (naive(model, tok, req, model.args.max_seq_len)[1],)
    assert res[-1] == Generator(model, tok, max_batch=2).generate(sampled)[0]


def test_stop_string_spanning_two_tokens(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    tok = without_eos(tok)
    prompt = PROMPTS[1]
    ids = tok.encode(prompt, bos=True)
    new, full = naive(model, tok, G(prompt, max_new_tokens=24), model.args.max_seq_len)
    head = tok.decode(ids)
    # Find a boundary between tokens k-1 and k whose two neighbouring characters first occur there.
    for k in range(1, len(new)):
        before = len(tok.decode(ids + new[:k])) - len(head)
        stop = full[before - 1 : before + 1]
        if before >= 1 and len(stop) == 2 and "\ufffd" not in stop and full.find(stop) == before - 1:
            break
    else:
        pytest.fail("no token boundary with a first-occurring two-character stop string")
    gen = Generator(model, tok, max_batch=2)
    never = "\x00never\x00"
    res = gen.generate([G(prompt, until=(never, stop), max_new_tokens=24), G(prompt, max_new_tokens=24)])
    assert res[0].completions == (full[: before - 1],)
    assert res[1].completions == (full,)
    assert gen.stats.generated_tokens == k + 1 + 24  # the stopped row ran until token k arrived


def test_eos_and_max_new_tokens_end_a_row(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    no_eos = without_eos(tok)
    prompt = PROMPTS[3]
    new, _ = naive(model, no_eos, G(prompt, max_new_tokens=12), model.args.max_seq_len)
    k = next(k for k in range(1, len(new)) if new[k] not in new[:k])
    eos_tok = copy.copy(tok)
    eos_tok.eos_id = new[k]  # pretend the k-th new token is EOS
    gen = Generator(model, eos_tok, max_batch=2)
    res = gen.generate([G(prompt, max_new_tokens=12)])
    ids = tok.encode(prompt, bos=True)
    assert res[0].completions == (tok.decode(ids + new[:k])[len(tok.decode(ids)):],)
    assert gen.stats.generated_tokens == k + 1
    gen = Generator(model, no_eos, max_batch=4)
    gen.generate([G(p, max_new_tokens=m) for p, m in zip(PROMPTS, (1, 5, 9, 2))])
    assert gen.stats.generated_tokens == 1 + 5 + 9 + 2


def test_sampling_is_reproducible_whatever_the_batch(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    target = G(PROMPTS[1], temperature=0.9, top_p=0.95, n=3, seed=7, max_new_tokens=12)
    others = [G(PROMPTS[0], temperature=1.0, n=2, seed=7, max_new_tokens=5),
              G(PROMPTS[3], max_new_tokens=7),
              G(PROMPTS[4], temperature=0.5, top_p=0.5, seed=1, max_new_tokens=9)]
    alone = Generator(model, tok, max_batch=3).generate([target])[0]
    mixed = Generator(model, tok, max_batch=4).generate(others[:2] + [target] + others[2:])
    reordered = Generator(model, tok, max_batch=2).generate([target] + others[::-1])[0]
    assert alone == mixed[2] == reordered
    # A greedy row among sampled ones (the sampling step) equals greedy decoding alone.
    assert mixed[1] == Generator(model, tok, max_batch=1).generate([others[1]])[0]
    assert len(alone.completions) == 3 and len(set(alone.completions)) > 1  # samples differ from each other
    reseeded = Generator(model, tok, max_batch=3).generate([replace(target, seed=8)])[0]
    assert reseeded != alone


def test_token_choice_follows_softmax_and_top_p():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    B = 20000
    token_hash = _mix32(torch.arange(5))

    def frequencies(temperature: float, top_p: float, keys, steps) -> torch.Tensor:
        chosen = _choose_tokens(logits.expand(B, 5), torch.full((B,), temperature), torch.full((B,), top_p),
                                _uniform(keys, steps, token_hash))
        return torch.bincount(chosen, minlength=5) / B

    rows, zeros = torch.arange(B), torch.zeros(B, dtype=torch.long)
    for temperature, top_p, keys, steps in [(1.0, 1.0, rows, zeros), (0.5, 1.0, zeros + 12345, rows),
                                            (1.0, 0.6, rows * 7 + 3, zeros + 2)]:
        p = (logits / temperature).softmax(-1)
        if top_p < 1:  # tokens 0 and 1 are the nucleus: 0.563 < 0.6 <= 0.563 + 0.207
            p = torch.tensor([p[0], p[1], 0, 0, 0]) / (p[0] + p[1])
        # 4 standard errors of a frequency estimated from B draws
        assert torch.allclose(frequencies(temperature, top_p, keys, steps), p, atol=4 * (0.25 / B) ** 0.5)


def test_greedy_choice_is_argmax():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    chosen = _choose_tokens(logits, torch.zeros(8), torch.full((8,), 0.5), torch.rand(8, 50))
    assert chosen.tolist() == logits.argmax(-1).tolist()


def test_samples_share_the_prompt_prefill(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    tok = without_eos(tok)
    n_prompt = len(tok.encode(PROMPTS[3], bos=True))
    gen = Generator(model, tok, max_batch=2)  # fewer rows than samples: later samples reuse a row's prompt
    sampled = gen.generate([G(PROMPTS[3], temperature=1.0, n=5, max_new_tokens=3)])[0]
    assert len(sampled.completions) == 5
    assert gen.stats.prompt_tokens == n_prompt - 1  # the last prompt token is the first decode input
    assert gen.stats.generated_tokens == 5 * 3
    gen = Generator(model, tok, max_batch=4)
    greedy = gen.generate([G(PROMPTS[3], n=3, max_new_tokens=6), G(PROMPTS[3], max_new_tokens=6)])
    assert greedy[0].completions == greedy[1].completions * 3
    assert gen.stats.generated_tokens == 2 * 6  # greedy samples run once
    assert gen.stats.prompt_tokens == n_prompt - 1  # two requests, one prompt: the second copies the first's row


def test_a_few_shot_header_is_run_once_per_row(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    header = "".join(f"Q: what does the {w} see?\nA: the {w} sees a ball.\n\n" for w in ("cat", "dog", "bird"))
    reqs = [G(header + f"Q: what does {w} see?\nA:", until=("\n",), max_new_tokens=3 + i % 3)
            for i, w in enumerate(("my friend", "the farmer", "a teacher", "the cat", "a dog", "the sun"))]
    gen = Generator(model, tok, max_batch=2)
    res = gen.generate(reqs)
    for req, r in zip(reqs, res):
        assert r.completions == (naive(model, tok, req, model.args.max_seq_len)[1],)
    ids = [tok.encode(r.prompt, bos=True)[:-1] for r in reqs]  # what the cache must hold per request
    shared = min(next(i for i, (a, b) in enumerate(zip(ids[0], x)) if a != b) for x in ids[1:])
    assert shared > 30
    # The header runs once (with the first prompt); each other prompt only past the header.
    assert gen.stats.prompt_tokens <= len(ids[0]) + sum(len(x) - shared for x in ids[1:])
    assert gen.stats.prompt_tokens + gen.stats.prompt_tokens_reused == sum(len(x) for x in ids)


def test_long_prompts_are_cut_from_the_left(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    long = " ".join(PROMPTS[3] for _ in range(3))
    assert len(tok.encode(long, bos=True)) > 32
    gen = Generator(model, tok, max_batch=2, max_len=32)
    reqs = [G(long, max_new_tokens=6), G(PROMPTS[0], max_new_tokens=6)]
    res = gen.generate(reqs)
    assert [r.truncated for r in res] == [True, False]
    assert gen.stats.truncated == 1
    for req, r in zip(reqs, res):
        assert r.completions == (naive(model, tok, req, 32)[1],)


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(n=0),
                                 dict(max_new_tokens=0), dict(max_new_tokens=64), dict(until=("",)),
                                 dict(until="\n")])
def test_bad_requests_are_user_errors(tiny_model_and_tokenizer, bad):
    model, tok = tiny_model_and_tokenizer
    with pytest.raises(UserError):
        Generator(model, tok, max_batch=1, max_len=64).generate([G("hi", **bad)])


def test_bad_settings_are_user_errors(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    with pytest.raises(UserError):
        Generator(model, tok, max_len=model.args.max_seq_len + 1)
    with pytest.raises(UserError):
        Generator(model, tok, max_batch=0)
    with pytest.raises(UserError):
        Generator(model, tok, use_cuda_graphs=True)  # the model is on the CPU


@pytest.mark.parametrize("which", ["tiny", "llama"])
@pytest.mark.parametrize("prompt", ["", "The cat", "café 日本", "Answer: ", "def f():\n    "])
def test_incremental_text_equals_full_decode(request, which, prompt):
    if which == "tiny":
        tok = request.getfixturevalue("tiny_model_and_tokenizer")[1]
    else:
        tok = Tokenizer(request.getfixturevalue("llama_tokenizer_path"))
    ids = tok.encode(prompt, bos=True)
    rng = random.Random(0)
    for _ in range(200):
        # Half byte pieces (ids 3..258), so multi-byte characters split across tokens are common;
        # now and then unk, BOS or EOS (ids 0..2).
        new = [rng.randrange(3, 259) if rng.random() < 0.5 else rng.randrange(0 if rng.random() < 0.1 else 3,
                                                                                tok.vocab_size)
               for _ in range(rng.randint(1, 10))]
        text = _CompletionText(tok, ids, ())
        for t in new:
            text.push(t)
        assert text.completion() == tok.decode(ids + new)[len(tok.decode(ids)):]


def test_stories260k_greedy_matches_llama2c(shared_data):
    folder = shared_data / "model" / "stories260K"
    if not (folder / "stories260K.bin").is_file():
        pytest.skip("stories260K is absent from ../shared/data")
    checkpoint = pytest.importorskip("llama_eval.model.checkpoint")
    model, tok = checkpoint.load_model(folder / "stories260K.bin", device="cpu", tokenizer=folder / "tok512.model")
    reqs = [G("", max_new_tokens=40), G("Once upon a time", max_new_tokens=8)]
    res = Generator(model, tok, max_batch=2).generate(reqs)
    # llama2.c's temperature-0 sample from BOS (doc/stories260K.md)
    assert res[0].completions[0].startswith("Once upon a time, there was a little girl named Lily. She loved to play")
    # The same story from a prompt: the prompt's tokens are the greedy path's, so it continues alike.
    assert res[0].completions[0].startswith("Once upon a time" + res[1].completions[0])
    assert len(res[1].completions[0]) > 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_equals_eager_step(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    model = copy.deepcopy(model).to("cuda")
    reqs = [G(p, max_new_tokens=3 + 2 * i, temperature=0.7 * (i % 2), n=1 + i % 2, seed=i)
            for i, p in enumerate(PROMPTS)]
    graphs = Generator(model, tok, max_batch=4, use_cuda_graphs=True).generate(reqs)
    eager = Generator(model, tok, max_batch=4, use_cuda_graphs=False).generate(reqs)
    assert graphs == eager
