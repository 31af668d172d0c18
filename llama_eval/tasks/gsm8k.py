"""GSM8K: grade-school math word problems with worked solutions (Cobbe et al. 2021).

Reproduces the GSM8K columns of Table 7 of the LLaMA paper (one sample per problem, and
maj1@100); protocol in ../shared/reference/PROTOCOL.md, "Table 7". The paper says "same setup
as Minerva" (Lewkowycz et al. 2022), which evaluates GSM8K with the chain-of-thought prompt of
Wei et al. (2022) and maj1@k sampling at temperature 0.6, nucleus top-p 0.95.

- Dataset: test, 1,319 problems. Release file `gsm8k/test.jsonl` ({"question", "answer"}, the
  answer a worked solution ending "#### <number>"); hub: `openai/gsm8k` `main` `test` (the same rows).
  Document id: "gsm8k-" + the first 12 hex digits of the question's sha1.
- Shots: 8, the same for every problem (one header the engine computes once). Option
  `gsm8k_prompt`:
    cot    (default) Wei et al.'s eight chain-of-thought exemplars (their Table 20, the prompt
           Minerva used for GSM8K), written out verbatim in COT_EXEMPLARS, in the paper's order.
           Layout: "Q: {q}\\nA: {chain of thought} The answer is {n}." per exemplar, a blank line
           between blocks, then "Q: {q}\\nA:".
    train  the first eight problems of the train split (`gsm8k/train.jsonl`; hub `main` train),
           solutions as released without the calculator annotations "<<48/2=24>>", ending
           "#### <number>"; layout "Question: {q}\\nAnswer: {solution}", blank line between
           blocks, then "Question: {q}\\nAnswer:" (zero-shot, both use the "Q:"/"A:" layout).
  Generation stops at a blank line or at the start of a new question ("Q:", "Question:"), at
  most 512 new tokens (Minerva's budget).
- Decoding and metrics:
    acc          one greedy sample per problem (the paper's plain column, "maj1@1" in Llama 2).
    maj1@{k}     k samples at temperature 0.6, top-p 0.95 (Minerva's; --temperature and
                 --option gsm8k_top_p override); the majority answer (metrics.majority_vote)
                 is scored. k = --samples, default 100 as in the paper; --samples 0 skips it.
  The answer (metrics.extract_number): for `cot`, the first number after "The answer is" (the
  exemplars' answer sentence), else after "####", else the last number; for `train`, "####"
  first. It is compared by value with the gold number (metrics.numbers_equal).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Sequence

from ..metrics import COT_MARKERS, TRAIN_MARKERS, canonical_number, extract_number, numbers_equal
from . import data, voting
from .base import Doc, DocScore, GenerationTask, Settings
from .data import content_id, unique_ids
from .options import Option

SAMPLES = 100  # maj1@100, as in Table 7
_CALCULATOR = re.compile(r"<<[^>]*>>")

# Wei et al. (2022), "Chain-of-thought prompting elicits reasoning in large language models",
# Table 20: the eight exemplars for math word problems, verbatim (question, chain of thought
# ending with "The answer is N.").
COT_EXEMPLARS = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
     "done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must "
     "have been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating "
     "35, they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops "
     "did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he "
     "have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
     "5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday "
     "to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
     "computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many "
     "golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 "
     "more, he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
     "dollars left. 23 - 15 is 8. The answer is 8."),
)

PROMPTS = ("cot", "train")


def gsm8k_doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
    """A problem from a release or hub row (both {"question", "answer"})."""
    question = data.field(row, "question", source, lineno)
    solution = data.field(row, "answer", source, lineno)
    gold = canonical_number(solution.rpartition("####")[2]) if "####" in solution else None
    if gold is None:
        raise data.invalid(source, lineno, "answer", solution[-60:], 'a worked solution ending "#### <number>"')
    return {"id": content_id("gsm8k", question), "question": question,
            "solution": _CALCULATOR.sub("", solution), "answer": gold}


def cot_docs() -> list[Doc]:
    return [{"id": f"wei-{i}", "question": q, "solution": a, "answer": canonical_number(a.rpartition(" ")[2]),
             "pool": "cot"} for i, (q, a) in enumerate(COT_EXEMPLARS, 1)]


class GSM8K(GenerationTask):
    name = "gsm8k"
    paper_name = "GSM8K"
    paper_table = 7
    paper_shots = (8,)
    headline_metric = "acc"
    hf_dataset = ("openai/gsm8k", "main", "test")
    few_shot_pool = ("gsm8k_prompt=cot: Wei et al.'s 8 chain-of-thought exemplars; train: the first 8 "
                     "problems of train; the same for every problem")
    until = ("\n\n", "Q:", "Question:")
    max_new_tokens = 512  # Minerva's budget
    fixed_shots = True
    release_files = ("gsm8k/test.jsonl",)
    options = {"gsm8k_prompt": Option("cot", "cot: Wei et al.'s 8 chain-of-thought exemplars (Minerva's "
                                      "GSM8K prompt); train: the first 8 train problems with their solutions",
                                      choices=PROMPTS),
               **voting.voting_options("gsm8k")}

    def load(self, data_dir: Path | None) -> list[Doc]:
        return self._read(data_dir, "test")

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        """Both pools, each marked by "pool": the exemplars, then the first 8 train problems
        (select_shots keeps the one option gsm8k_prompt names)."""
        train = [{**d, "pool": "train"} for d in self._read(data_dir, "train")[:8]]
        return cot_docs() + train

    def _read(self, data_dir: Path | None, split: str) -> list[Doc]:
        if data_dir is not None:
            path = data.release_file(Path(data_dir), f"gsm8k/{split}.jsonl")
            return unique_ids([gsm8k_doc(row, path, lineno) for lineno, row in data.read_records(path)])
        source = data.hf_source(self.hf_dataset, split)
        return unique_ids([gsm8k_doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset, split))])

    def select_shots(self, doc: Doc, pool: Sequence[Doc], k: int, settings: Settings) -> list[Doc]:
        style = self.option(settings, "gsm8k_prompt")
        return super().select_shots(doc, [d for d in pool if d.get("pool", style) == style], k, settings)

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        """The exemplars' own layout (their "pool"); zero-shot, the chain-of-thought one."""
        q, a = ("Question:", "Answer:") if shots and shots[0].get("pool") == "train" else ("Q:", "A:")
        blocks = [f"{q} {s['question']}\n{a} {s['solution']}" for s in shots]
        return "\n\n".join([*blocks, f"{q} {doc['question']}\n{a}"])

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return voting.majority_regimes(settings, self, SAMPLES)

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        markers = COT_MARKERS if self.option(settings, "gsm8k_prompt") == "cot" else TRAIN_MARKERS
        answer_of = functools.partial(extract_number, markers=markers)
        return voting.grade_by_vote(doc, completions, doc["answer"], answer_of, numbers_equal)
