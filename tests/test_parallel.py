"""Data and tensor parallelism against one process, on the CPU with gloo.

Multi-process tests start 2 ranks with the environment torchrun would give them and compare
what rank 0 reports with a single-process run of the same checkpoint in the test process.
The checkpoint is a random tiny model written here in Meta's layout as 1, 2 and 4
model-parallel shards, split by this file's own table of fairscale's layers, and another one
saved by transformers in Hugging Face's layout (safetensors).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llama_eval import parallel
from llama_eval.engine.generation import Generator
from llama_eval.engine.scoring import Scorer, build_trie, default_batch_tokens, full_vocab_logprobs
from llama_eval.errors import UserError
from llama_eval.model.checkpoint import load_checkpoint
from llama_eval.model.llama import ModelArgs, build, init_random
from llama_eval.model.presets import preset
from llama_eval.model.tokenizer import Tokenizer
from llama_eval.requests import GenerationRequest as G
from llama_eval.requests import LoglikelihoodRequest as R

from conftest import TINY_TOKENIZER  # noqa: E402
TOKENIZER = TINY_TOKENIZER  # 320 pieces
# 8 query heads over 4 kv heads: splits into 1, 2 and 4 shards the way Meta's code allows.
PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 4, "multiple_of": 32, "norm_eps": 1e-5,
          "vocab_size": -1}
SHARDS = (1, 2, 4)
# fairscale's split dimension per weight (ColumnParallelLinear 0, RowParallelLinear 1,
# ParallelEmbedding 1); norms are whole in every shard.
META_SPLIT = {"tok_embeddings": 1, "output": 0, "wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "wo": 1, "w2": 1}
LAUNCH_TIMEOUT_S = 60  # the test's own guard against a hang
GRACE_S = 1  # how long other ranks may outlive rank 0


# ---------------------------------------------------------------------------- fixtures


def write_meta_checkpoint(folder: Path, state: dict[str, torch.Tensor], n_shards: int) -> Path:
    folder.mkdir(parents=True)
    for s in range(n_shards):
        shard = {"rope.freqs": torch.zeros(4)}  # LLaMA 1 shards carry this unused buffer
        for name, t in state.items():
            dim = META_SPLIT.get(name.split(".")[-2])
            shard[name] = t.clone() if dim is None else t.chunk(n_shards, dim)[s].clone()
        torch.save(shard, folder / f"consolidated.{s:02d}.pth")
    (folder / "params.json").write_text(json.dumps(PARAMS))
    shutil.copy(TOKENIZER, folder / "tokenizer.model")
    return folder


def write_hf_checkpoint(folder: Path) -> Path:
    """A random LlamaForCausalLM of PARAMS' shape saved by transformers (safetensors), 2 files."""
    transformers = pytest.importorskip("transformers")
    args = ModelArgs(**{k: v for k, v in PARAMS.items() if k != "vocab_size"})
    cfg = transformers.LlamaConfig(vocab_size=Tokenizer(TOKENIZER).vocab_size, hidden_size=args.dim,
                                   intermediate_size=args.ffn_dim, num_hidden_layers=args.n_layers,
                                   num_attention_heads=args.n_heads, num_key_value_heads=args.kv_heads,
                                   rms_norm_eps=args.norm_eps, max_position_embeddings=256)
    torch.manual_seed(4)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():  # sharper than transformers' std 0.02, so a wrong slice shows
            p.copy_(torch.randn(p.shape) / p.shape[-1] ** 0.5)
    model.save_pretrained(folder, max_shard_size="100KB")
    shutil.copy(TOKENIZER, folder / "tokenizer.model")
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[int | str, Path]:
    """{number of shards: Meta folder} of one random model, and "hf": another one's HF folder."""
    tok = Tokenizer(TOKENIZER)
    args = ModelArgs(**{k: v for k, v in PARAMS.items() if k != "vocab_size"}, vocab_size=tok.vocab_size)
    state = init_random(build(args, "cpu"), seed=3).state_dict()
    root = tmp_path_factory.mktemp("meta")
    # "hf" first: the TP scenario's last model, which it probes directly, is then a Meta one.
    folders: dict[int | str, Path] = {"hf": write_hf_checkpoint(root / "hf")}
    return folders | {n: write_meta_checkpoint(root / f"shards{n}", state, n) for n in SHARDS}


def score_requests() -> list[R]:
    header = "The following are multiple choice questions (with answers).\n\n"
    reqs = []
    for q in range(5):
        ctx = header + f"Question {q}: what is the capital of France?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
        reqs += [R(ctx, f" {letter}") for letter in "ABCD"]
    for q in range(4):
        ctx = f"Once upon a time there was a little girl number {q}. She"
        reqs += [R(ctx, end) for end in (" liked to play in the park.", " jumps over the lazy dog.", " wrote a book")]
    reqs.append(R("", "The quick brown fox"))
    return reqs


def generation_requests() -> list[G]:
    return [G("Q: Who wrote the book the origin of species?\nA:", ("\n",), max_new_tokens=6),
            G("def add(a, b):", (), max_new_tokens=5),
            G("The quick brown", (), max_new_tokens=4, temperature=0.8, n=2, seed=7)]


@pytest.fixture(scope="module")
def reference(checkpoints):
    """Single-process results: log-likelihoods and completions."""
    loaded = load_checkpoint(checkpoints[1], "cpu", "float32")
    scores = Scorer(loaded.model, loaded.tokenizer, batch_tokens=64).loglikelihood(score_requests())
    gens = Generator(loaded.model, loaded.tokenizer, max_batch=4, max_len=128).generate(generation_requests())
    return scores, gens, loaded


# ---------------------------------------------------------------------------- launching ranks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, out: Path, world: int = 2, **kw) -> list[dict]:
    """Run `scenario` on `world` fresh processes with torchrun's environment; each rank's report."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, world, port, scenario, str(out), kw)) for r in range(world)]
    for p in procs:
        p.start()
    # Rank 0 reports; a rank still running a few seconds after it (a "hung" rank) is killed.
    procs[0].join(LAUNCH_TIMEOUT_S)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.1))
        if p.is_alive():
            p.kill()
            p.join()
    print("exit codes", [p.exitcode for p in procs])
    return [torch.load(out / f"rank{r}.pt", weights_only=False) if (out / f"rank{r}.pt").exists() else {}
            for r in range(world)]


def _worker(rank: int, world: int, port: int, scenario: str, out: str, kw: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    report: dict = {}
    dist = parallel.init_from_env(tp=kw.get("tp", 1), device="cpu", timeout_s=kw.get("timeout_s", 20))
    started = time.monotonic()
    try:
        with parallel.report_failure(dist):
            report = SCENARIOS[scenario](dist, **kw)
    except UserError as e:
        report = {"error": str(e), "type": type(e).__name__, "seconds": time.monotonic() - started}
    finally:
        torch.save(report, Path(out) / f"rank{rank}.pt")
    parallel.shutdown(dist)


def _tp_scenario(dist, checkpoints, **_):
    """Each checkpoint loaded on 2 tensor-parallel ranks: scores, completions, raw log-probs."""
    report = {"local_heads": [], "scores": {}, "generations": {}, "args": {}, "default_batch": {}}
    for n, folder in checkpoints.items():
        loaded = parallel.load_tensor_parallel(folder, dist, "cpu", "float32")
        model = loaded.model
        attention = model.layers[0].attention
        report["local_heads"].append((attention.n_heads, attention.kv_heads, attention.wq.weight.shape))
        report["args"][n] = model.args
        report["default_batch"][n] = Scorer(model, loaded.tokenizer).batch_tokens
        scorer = Scorer(model, loaded.tokenizer, batch_tokens=64, token_logprobs=parallel.vocab_parallel_logprobs)
        report["scores"][n] = scorer.loglikelihood(score_requests())
        if n == "hf":
            continue
        gen = Generator(model, loaded.tokenizer, max_batch=4, max_len=128)
        report["generations"][n] = gen.generate(generation_requests())
    # The log-prob function alone, on random hidden rows (same on both ranks).
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(7, PARAMS["dim"], generator=gen)
    rows = torch.tensor([0, 0, 1, 3, 3, 6])
    tokens = torch.randint(0, model.args.vocab_size, (6,), generator=gen)
    with torch.inference_mode():
        report["direct"] = parallel.vocab_parallel_logprobs(model, h, rows, tokens)
        argmax_tokens = model.head(h).argmax(-1)[rows]  # gathered logits: the true argmax
        report["direct_argmax"] = parallel.vocab_parallel_logprobs(model, h, rows, argmax_tokens)
    report["direct_inputs"] = (h, rows, tokens, argmax_tokens)
    report["info_args"] = loaded.info.args
    return report


def _dp_scenario(dist, checkpoints, **_):
    """Requests split over 2 data-parallel ranks, in 3 rounds, gathered on rank 0."""
    loaded = load_checkpoint(checkpoints[1], "cpu", "float32")
    scorer = Scorer(loaded.model, loaded.tokenizer, batch_tokens=64)
    gen = Generator(loaded.model, loaded.tokenizer, max_batch=4, max_len=128)
    tok = loaded.tokenizer
    scores = dict(parallel.iter_data_parallel(score_requests(), scorer.iter_loglikelihood, tok, dist, rounds=3))
    gens = dict(parallel.iter_data_parallel(generation_requests(), gen.iter_generate, tok, dist, rounds=2))
    return {"scores": scores, "generations": gens, "tokens_run": scorer.stats.tokens_run,
            "cached": parallel.broadcast_object([dist.rank, "from rank 0"], dist)}


def _dp_tp_scenario(dist, checkpoints, **_):
    """2 model copies of 2 tensor-parallel ranks each, on the 4-shard checkpoint."""
    loaded = parallel.load_tensor_parallel(checkpoints[4], dist, "cpu", "float32")
    scorer = Scorer(loaded.model, loaded.tokenizer, batch_tokens=64, token_logprobs=parallel.vocab_parallel_logprobs)
    tok = loaded.tokenizer
    scores = dict(parallel.iter_data_parallel(score_requests(), scorer.iter_loglikelihood, tok, dist, rounds=2))
    return {"scores": scores, "groups": (dist.tp_rank, dist.dp_rank), "tokens_run": scorer.stats.tokens_run}


def _failure_scenario(dist, checkpoints, how, **_):
    """Rank 1 fails (`how`) while rank 0 runs the engine; rank 0 must stop with RankStopped."""
    if dist.tp > 1:
        loaded = parallel.load_tensor_parallel(checkpoints[2], dist, "cpu", "float32")
        run = Scorer(loaded.model, loaded.tokenizer, batch_tokens=64,
                     token_logprobs=parallel.vocab_parallel_logprobs).iter_loglikelihood
    else:
        loaded = load_checkpoint(checkpoints[1], "cpu", "float32")
        run = Scorer(loaded.model, loaded.tokenizer, batch_tokens=64).iter_loglikelihood
    if dist.rank == 1:
        if how == "raise":
            raise ValueError("out of memory, say")
        if how == "exit":
            os._exit(3)
        time.sleep(LAUNCH_TIMEOUT_S)  # "hang": alive but silent
    if dist.tp > 1:
        list(run(score_requests()))
    else:
        list(parallel.iter_data_parallel(score_requests(), run, loaded.tokenizer, dist))
    return {"finished": True}


SCENARIOS = {"tp": _tp_scenario, "dp": _dp_scenario, "dp_tp": _dp_tp_scenario, "failure": _failure_scenario}


# ---------------------------------------------------------------------------- tensor parallel


@pytest.fixture(scope="module")
def tp_reports(checkpoints, tmp_path_factory):
    return launch("tp", tmp_path_factory.mktemp("tp"), tp=2, checkpoints=checkpoints)


@pytest.mark.slow
@pytest.mark.parametrize("n_shards", SHARDS)
def test_tensor_parallel_scores_equal_one_process(tp_reports, reference, n_shards):
    ref_scores = reference[0]
    for report in tp_reports:  # both ranks compute the same results
        got = report["scores"][n_shards]
        assert [r.n_tokens for r in got] == [r.n_tokens for r in ref_scores]
        assert [r.is_greedy for r in got] == [r.is_greedy for r in ref_scores]
        np.testing.assert_allclose([r.logprob for r in got], [r.logprob for r in ref_scores], atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("n_shards", SHARDS)
def test_tensor_parallel_generation_equals_one_process(tp_reports, reference, n_shards):
    # Greedy and seeded sampling both read whole logit rows, gathered across the ranks.
    for report in tp_reports:
        assert report["generations"][n_shards] == reference[1]


def test_each_rank_holds_half_the_heads(tp_reports):
    # 8 query heads and 4 kv heads of size 8 over 2 ranks.
    for report in tp_reports:
        assert report["local_heads"] == [(4, 2, torch.Size([32, 64]))] * (len(SHARDS) + 1)
        assert report["info_args"].n_heads == 8  # the checkpoint's description stays whole


def test_a_sharded_model_keeps_its_own_config(tp_reports, reference):
    # model.args is the whole model's, so nothing sized from it (the scorer's default token
    # budget, twice the residual width) changes with --tp.
    one_process = reference[2].model
    for report in tp_reports:
        for n, args in report["args"].items():
            assert args == one_process.args if n != "hf" else args.dim == one_process.args.dim == PARAMS["dim"]
            assert report["default_batch"][n] == default_batch_tokens(one_process.args) == Scorer(
                one_process, reference[2].tokenizer).batch_tokens


def test_tensor_parallel_reads_hugging_face_safetensors(tp_reports, checkpoints):
    loaded = load_checkpoint(checkpoints["hf"], "cpu", "float32")
    assert loaded.info.format == "hf" and len(loaded.info.files) > 4  # several safetensors shards
    want = Scorer(loaded.model, loaded.tokenizer, batch_tokens=64).loglikelihood(score_requests())
    for report in tp_reports:
        got = report["scores"]["hf"]
        assert [r.is_greedy for r in got] == [r.is_greedy for r in want]
        np.testing.assert_allclose([r.logprob for r in got], [r.logprob for r in want], atol=1e-4, rtol=0)


def test_vocab_parallel_logprobs_equal_full_computation(tp_reports, reference):
    model = reference[2].model
    h, rows, tokens, argmax_tokens = tp_reports[0]["direct_inputs"]
    with torch.inference_mode():
        want_lp, want_hit = full_vocab_logprobs(model, h, rows, tokens)
        _, want_argmax = full_vocab_logprobs(model, h, rows, argmax_tokens)
    for report in tp_reports:
        lp, hit = report["direct"]
        torch.testing.assert_close(lp, want_lp, atol=1e-5, rtol=0)
        assert hit.tolist() == want_hit.tolist()
        assert report["direct_argmax"][1].all() and want_argmax.all()


# ---------------------------------------------------------------------------- data parallel


@pytest.mark.slow
def test_data_parallel_results_equal_one_process(checkpoints, reference, tmp_path):
    reports = launch("dp", tmp_path, tp=1, checkpoints=checkpoints)
    ref_scores, ref_gens, _ = reference
    main, other = reports
    assert sorted(main["scores"]) == list(range(len(ref_scores)))
    for i, ref in enumerate(ref_scores):
        got = main["scores"][i]
        assert (got.n_tokens, got.is_greedy, got.truncated) == (ref.n_tokens, ref.is_greedy, ref.truncated)
        assert got.logprob == pytest.approx(ref.logprob, abs=1e-5)
    assert [main["generations"][i] for i in range(len(ref_gens))] == ref_gens
    assert other["scores"] == {} and other["generations"] == {}  # only rank 0 receives results
    assert other["tokens_run"] > 0 and main["tokens_run"] > 0  # ... but both did work
    assert other["cached"] == [0, "from rank 0"]


@pytest.mark.slow
def test_data_and_tensor_parallel_combine(checkpoints, reference, tmp_path):
    reports = launch("dp_tp", tmp_path, world=4, tp=2, checkpoints=checkpoints)
    assert [r["groups"] for r in reports] == [(0, 0), (1, 0), (0, 1), (1, 1)]  # ranks 0, 1 hold one copy
    assert [r["scores"] == {} for r in reports] == [False, True, True, True]
    # The two ranks of a copy ran the same tokens; the copies ran different requests.
    assert reports[0]["tokens_run"] == reports[1]["tokens_run"] != reports[2]["tokens_run"] == reports[3]["tokens_run"]
    ref_scores = reference[0]
    got = reports[0]["scores"]
    assert sorted(got) == list(range(len(ref_scores)))
    assert [got[i].is_greedy for i in sorted(got)] == [r.is_greedy for r in ref_scores]
    np.testing.assert_allclose([got[i].logprob for i in sorted(got)], [r.logprob for r in ref_scores],
                               atol=1e-4, rtol=0)


def tokens_run(reqs, tok, idx) -> int:
    """Tokens the prefix-tree scorer runs for requests `idx`: the nodes of their trie."""
    trie, _ = build_trie([sum(tok.encode_pair(reqs[i].context, reqs[i].continuation), []) for i in idx])
    return len(trie.token)


def test_split_balances_tokens_and_keeps_questions_together():
    tok = Tokenizer(TOKENIZER)
    long_ctx = "Once upon a time there was a little girl named Lily. She liked to play in the park. " * 3
    reqs = []
    for q in range(30):  # questions of very different lengths: equal counts would be unequal work
        ctx = (long_ctx if q % 3 == 0 else "") + f"Question {q}: what is {q} plus {q}?\nAnswer:"
        reqs += [R(ctx, f" {a}") for a in ("one", "two", "three", "four")]
    split = parallel.split_requests(reqs, tok, 3)
    assert sorted(i for part in split for i in part) == list(range(len(reqs)))
    for i, req in enumerate(reqs):  # every request of a context on one rank
        owners = {r for r, part in enumerate(split) for j in part if reqs[j].context == req.context}
        assert len(owners) == 1
    masses = [tokens_run(reqs, tok, part) for part in split]
    assert max(masses) / min(masses) < 1.25
    assert max(map(len, split)) / min(map(len, split)) > 1.25  # it was not balanced by count
    assert parallel.split_requests(list(reqs), tok, 3) == split  # deterministic


def test_split_prefers_cutting_between_few_shot_headers():
    tok = Tokenizer(TOKENIZER)

    def mmlu_like(sizes: dict[str, int]) -> list[R]:  # a few-shot header per subject
        reqs = []
        for subject, n in sizes.items():
            header = f"The following are questions about {subject}.\n\n" + "Q: example? A: yes\n\n" * 3
            for q in range(n):
                reqs += [R(header + f"Q: {subject} question {q}?\nAnswer:", f" {c}") for c in "ABCD"]
        return reqs

    def subjects(reqs, split):
        return sorted(tuple(sorted({reqs[i].context.split()[5] for i in part})) for part in split)

    # 11 against 9 questions is within a 20% slack of the balanced cut: the headers stay whole.
    reqs = mmlu_like({"astronomy": 11, "biology": 9})
    assert subjects(reqs, parallel.split_requests(reqs, tok, 2, slack=0.2)) == [("astronomy.",), ("biology.",)]
    # 16 against 4 is not: balance wins and the larger subject's header runs on both ranks.
    reqs = mmlu_like({"astronomy": 16, "biology": 4})
    split = parallel.split_requests(reqs, tok, 2, slack=0.2)
    assert subjects(reqs, split) == [("astronomy.",), ("astronomy.", "biology.")]


def test_split_more_ranks_than_groups():
    tok = Tokenizer(TOKENIZER)
    reqs = [R("Question: one?", " A"), R("Question: one?", " B")]
    split = parallel.split_requests(reqs, tok, 4)
    assert sorted(map(len, split)) == [0, 0, 0, 2]


# ---------------------------------------------------------------------------- failures


@pytest.mark.slow
@pytest.mark.parametrize("how, tp", [("raise", 2), ("exit", 1), ("hang", 1)])
def test_a_failing_rank_stops_the_run_with_a_clear_error(checkpoints, tmp_path, how, tp):
    timeout_s = 2
    reports = launch("failure", tmp_path, tp=tp, checkpoints=checkpoints, how=how, timeout_s=timeout_s)
    main = reports[0]
    assert main.get("type") == "RankStopped", main
    assert main["seconds"] < timeout_s + 5  # loading the model, then at most one timeout
    assert "Rerun the same command to resume from the cache" in main["error"]
    if how == "raise":  # the failing rank's own reason, through the rendezvous store
        assert main["error"].startswith("rank 1 stopped with ValueError: out of memory, say")
    else:
        assert "did not answer within the 2 s timeout" in main["error"]


# ---------------------------------------------------------------------------- in one process


def test_no_torchrun_means_no_dist(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.init_from_env() is None
    with pytest.raises(UserError, match="torchrun --nproc-per-node 2"):
        parallel.init_from_env(tp=2)


def test_tp_must_split_the_model_evenly():
    with pytest.raises(UserError, match="query heads 52.*use one of --tp 1, 2, 4"):
        parallel.TPLayout.check(preset("33b"), 8)
    parallel.TPLayout.check(preset("65b"), 8)
    parallel.TPLayout.check(preset("llama2-70b"), 16)  # 8 kv heads, each on 2 ranks


def test_four_ranks_slice_two_shards_and_share_kv_heads(tmp_path):
    """tiny: 4 query heads, 2 kv heads. On 4 ranks each rank holds one query head and the kv
    head it reads (query heads 0, 1 read kv head 0), read from 2 Meta shards by the loading
    pipeline (no process group: building the layers needs only the rank's place)."""
    args = ModelArgs(**{**preset("tiny").__dict__, "vocab_size": 320})
    state = init_random(build(args, "cpu"), seed=5).state_dict()
    folder = write_meta_checkpoint(tmp_path / "m", state, 2)
    (folder / "params.json").write_text(json.dumps({"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads,
                                                    "n_kv_heads": args.kv_heads, "multiple_of": args.multiple_of,
                                                    "norm_eps": args.norm_eps, "vocab_size": -1}))
    ranks = []
    for r in range(4):
        place = SimpleNamespace(tp=4, tp_rank=r)
        loaded = load_checkpoint(folder, "cpu", "float32", sharding=lambda a: parallel.TensorParallel(a, place))
        assert loaded.model.args == loaded.info.args and loaded.model.args.n_heads == 4
        ranks.append(loaded.model.state_dict())
    D = args.head_dim
    for name in ("layers.1.attention.wq.weight", "layers.0.feed_forward.w1.weight", "output.weight"):
        torch.testing.assert_close(torch.cat([s[name] for s in ranks], 0), state[name], rtol=0, atol=0)
    for name in ("layers.0.attention.wo.weight", "layers.1.feed_forward.w2.weight"):
        torch.testing.assert_close(torch.cat([s[name] for s in ranks], 1), state[name], rtol=0, atol=0)
    for r, s in enumerate(ranks):
        kv = r // 2
        wk = state["layers.0.attention.wk.weight"]
        torch.testing.assert_close(s["layers.0.attention.wk.weight"], wk[kv * D : (kv + 1) * D], rtol=0, atol=0)
        torch.testing.assert_close(s["tok_embeddings.weight"], state["tok_embeddings.weight"], rtol=0, atol=0)
