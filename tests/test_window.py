"""Whole shots dropped to fit the window (issue 11, item 5): the engine's window check
(engine/window.py) agrees with the engine's own truncation, and on the real MMLU files no
request is cut from the left once tasks drop shots."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from llama_eval.engine.generation import Generator
from llama_eval.engine.scoring import Scorer
from llama_eval.engine.window import WindowFit
from llama_eval.requests import GenerationRequest, LoglikelihoodRequest as R

pytestmark = pytest.mark.filterwarnings("ignore::llama_eval.tasks.data.DataMismatchWarning")
WORDS = "the cat sees a red ball and the dog likes some bread by the river".split()


def text(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def test_fits_is_exactly_the_scorers_truncation_rule(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    window = 40
    fits = WindowFit(tok, window)
    requests = [R(text(n), " " + text(m)) for n in range(1, 40, 3) for m in (1, 4)]
    results = Scorer(model, tok, batch_tokens=64, max_len=window).loglikelihood(requests)
    assert {fits(r) for r in requests} == {True, False}
    assert [fits(r) for r in requests] == [not res.truncated for res in results]


def test_fits_is_exactly_the_generators_truncation_rule(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    window = 48
    fits = WindowFit(tok, window)
    requests = [GenerationRequest(text(n), ("\n",), max_new_tokens=4) for n in range(1, 40, 3)]
    results = Generator(model, tok, max_batch=4, max_len=window, use_cuda_graphs=False).generate(requests)
    assert {fits(r) for r in requests} == {True, False}
    assert [fits(r) for r in requests] == [not res.truncated for res in results]


@pytest.mark.slow
def test_real_mmlu_drops_whole_shots_and_nothing_is_cut(shared_data, llama_tokenizer_path):
    """Hendrycks' rule on the real files: 522 questions keep fewer than 5 dev examples (always the
    subject's first k), every request then fits LLaMA's 2,048 tokens whole, and the prompt keeps
    Hendrycks' layout: the header, k solved dev questions, the question."""
    from llama_eval.config import RunConfig
    from llama_eval.evaluator import fit_to_window, plan, settings_of
    from llama_eval.model.tokenizer import Tokenizer

    tok = Tokenizer(llama_tokenizer_path)
    config = RunConfig(model="random:tiny", tasks=("mmlu",), data_dir=str(shared_data))
    settings = dataclasses.replace(settings_of(config), fits=WindowFit(tok, 2048))
    [run] = plan(config, settings)
    fit_to_window([run], settings, None, 2048)
    fewer = [i for i, used in enumerate(run.shots_used) if used < 5]
    assert len(fewer) == 522
    assert Counter(run.docs[i]["subject"] for i in fewer) == {
        "high_school_us_history": 204, "high_school_european_history": 165, "professional_law": 151,
        "high_school_world_history": 2}, Counter(run.docs[i]["subject"] for i in fewer)
    dev = [d for d in run.task.load_shots(shared_data)]
    for i in fewer:
        doc, reqs, k = run.docs[i], run.requests[i], run.shots_used[i]
        assert all(len(c) + len(t) - 1 <= 2048 for c, t in tok.encode_pairs([(r.context, r.continuation) for r in reqs]))
        first_k = [d for d in dev if d["subject"] == doc["subject"]][:k]
        assert reqs[0].context == run.task.context(doc, first_k)
        assert reqs[0].context.startswith("The following are multiple choice questions (with answers) about ")
        assert reqs[0].context.count("\nAnswer:") == k + 1


def test_token_counts_are_the_encodings_lengths(llama_tokenizer_path):
    """Counted in batches with a shared header encoded once, or one at a time: len(encode(text))."""
    from llama_eval.engine.window import TokenCounts
    from llama_eval.model.tokenizer import Tokenizer

    tok = Tokenizer(llama_tokenizer_path)
    header = "The following are questions about rivers.\n\n" + "".join(
        f"{text(30 + i)}?\nA. {text(i + 2)}\nB. no\nAnswer: A\n\n" for i in range(5))
    texts = [header + f"{text(n)} number {n}?\nAnswer:" for n in range(1, 40)] + [" B", "", "  two  spaces "]
    counts = TokenCounts(tok)
    counts.add(texts)
    assert [counts(t) for t in texts] == [len(tok.encode(t)) for t in texts]
    assert counts("not added before") == len(tok.encode("not added before"))
