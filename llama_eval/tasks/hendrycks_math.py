"""MATH: competition mathematics problems with worked solutions (Hendrycks et al. 2021).

Reproduces the MATH columns of Table 7 of the LLaMA paper (one sample per problem, and
maj1@256); protocol in ../shared/reference/PROTOCOL.md, "Table 7". The paper says only "same
setup as Minerva"; shots, prompt, temperature and answer extraction are NOT STATED.

- Dataset: test, 5,000 problems in 7 subjects. Release file `math/MATH_test.tar.gz`, one
  pretty-printed JSON member `MATH/test/<subject>/<n>.json` per problem ({"problem", "level",
  "type", "solution"}); document id "<subject>/<n>", documents in member-name order (subjects
  alphabetically, then "1.json", "10.json", "100.json", ... as the archive lists them). Hub:
  `EleutherAI/hendrycks_math`, one config per subject (SUBJECTS, in the same order), split test,
  rows with the same four fields. Hub rows do not carry the file number, so hub ids are
  "<subject>/<row index>"; the documents' content is the same as the release's.
- Gold: the last \\boxed{...} of the solution (metrics.last_boxed), normalised by the grader.
- Shots: 4, the same for every problem. The paper says "same setup as Minerva" (Lewkowycz et
  al. 2022); option `math_prompt`:
    minerva    (default) Minerva's fixed 4-shot prompt (its appendix; MINERVA_PROMPT, verbatim,
               including the stray "}" after the first problem's formula), each solution ending
               "Final Answer: The final answer is X. I hope it is correct."; layout
               "Problem:\\n{problem}\\n\\nSolution:\\n{solution}" per exemplar, blank lines
               between, then "Problem:\\n{problem}\\n\\nSolution:".
    llama_eval four worked examples written for this project (EXEMPLARS), each ending
               "The final answer is $<answer>$."; layout "Problem:\\n{p}\\n\\nSolution:\\n{s}\\n\\n"
               per shot, then "Problem:\\n{problem}\\n\\nSolution:\\n".
  Generation stops at a line starting "Problem:" or "Solution:" (the model beginning another
  example) or after "I hope it is correct.", at most 512 new tokens (Minerva's budget). The
  rare prompt that leaves less room is shortened by dropping shots (Task.fit_shots).
- Decoding and metrics, as for GSM8K:
    acc          one greedy sample per problem (the paper's plain column).
    maj1@{k}     k samples at temperature 0.6, top-p 0.95 (Minerva's; --temperature and --option
                 math_top_p override); the majority of the normalised answers is scored.
                 k = --samples, default 256 as in the paper; --samples 0 skips the sampled regime.
- Grading, option `math_grader`:
    minerva    (default) the answer stated as "The final answer is X. I hope it is correct"
               (math_answers.minerva_answer; no such sentence: no answer), normalised by
               Minerva's rules (math_answers.minerva_normalize), equal to the gold normalised
               the same way as a string or by SymPy (math_answers.answers_equivalent: a parse
               failure compares strings; 5 seconds per comparison).
    llama_eval what follows "The final answer is", else the last \\boxed{} of the completion,
               normalised by metrics.normalize_math_answer, compared with the gold as strings.
"""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..math_answers import answers_equivalent, minerva_answer, minerva_normalize
from ..metrics import last_boxed, math_answer, normalize_math_answer
from . import data, voting
from .base import Doc, DocScore, GenerationTask, Settings
from .options import Option

SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
            "number_theory", "prealgebra", "precalculus")
SAMPLES = 256  # maj1@256, as in Table 7
RELEASE_FILE = "math/MATH_test.tar.gz"
_MEMBER = re.compile(r"MATH/test/([a-z_]+)/(\d+)\.json")

# Four worked examples written for this project, one per kind of answer (integer, fraction,
# radical, ordered pair), each ending with the answer line the grader looks for first.
EXEMPLARS = (
    ("What is the remainder when $2^{10}$ is divided by $7$?",
     "Since $2^3 = 8 = 7 + 1$, we have $2^3 \\equiv 1 \\pmod{7}$. "
     "Then $2^{10} = (2^3)^3 \\cdot 2 \\equiv 1^3 \\cdot 2 = 2 \\pmod{7}$.\n"
     "The final answer is $2$."),
    ("Two fair six-sided dice are rolled. What is the probability that the two numbers rolled add up "
     "to $4$? Express your answer as a common fraction.",
     "There are $6 \\cdot 6 = 36$ equally likely outcomes. A sum of $4$ comes from $(1,3)$, $(2,2)$ "
     "and $(3,1)$, so $3$ outcomes. The probability is $\\frac{3}{36} = \\frac{1}{12}$.\n"
     "The final answer is $\\frac{1}{12}$."),
    ("What is the distance between the points $(1, 2)$ and $(3, 5)$? Express your answer in simplest "
     "radical form.",
     "The points differ by $3 - 1 = 2$ horizontally and $5 - 2 = 3$ vertically, so the distance is "
     "$\\sqrt{2^2 + 3^2} = \\sqrt{13}$.\n"
     "The final answer is $\\sqrt{13}$."),
    ("Find the ordered pair $(x, y)$ that satisfies $x + y = 7$ and $x - y = 1$.",
     "Adding the two equations gives $2x = 8$, so $x = 4$. Then $y = 7 - x = 3$.\n"
     "The final answer is $(4, 3)$."),
)


# Minerva's four-shot MATH prompt (Lewkowycz et al. 2022, appendix), verbatim: (problem, solution).
MINERVA_PROMPT = (
    ("Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
     "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and "
     "$5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. "
     "Therefore, the domain of the expression is $\\boxed{[2,5)}$.\n"
     "Final Answer: The final answer is $[2,5)$. I hope it is correct."),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = \\boxed{24}.$\n"
     "Final Answer: The final answer is $24$. I hope it is correct."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
     "times must Terrell lift them in order to lift the same total weight?",
     "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of weight.  "
     "If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds "
     "of weight.  Equating this to 480 pounds, we can solve for $n$:\n"
     "\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\n"
     "Final Answer: The final answer is $16$. I hope it is correct."),
    ("If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution "
     "$(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also "
     "know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\n"
     "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct."),
)
PROMPTS = ("minerva", "llama_eval")


def math_doc(row: dict[str, Any], doc_id: str, subject: str, where: str) -> Doc:
    """A problem from a release member or a hub row (both {"problem", "level", "type",
    "solution"}); `where` names the member or row in error messages."""
    fields = {}
    for name in ("problem", "level", "type", "solution"):
        if not isinstance(row.get(name), str):
            problem = "is missing" if name not in row else f"should be a string, got {row[name]!r:.60}"
            raise UserError(f"{where}: field {name!r} {problem}")
        fields[name] = row[name]
    boxed = last_boxed(fields["solution"])
    answer = normalize_math_answer(boxed) if boxed is not None else ""
    if not answer:
        raise UserError(f"{where}: field 'solution' should end with the answer in \\boxed{{...}}, "
                        f"got {fields['solution'][-60:]!r}")
    return {"id": doc_id, "subject": subject, "level": fields["level"], "problem": fields["problem"],
            "solution": fields["solution"], "answer": answer}


def read_archive(path: Path) -> list[Doc]:
    """The problems of a MATH test archive, in member-name order."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
            return [_member_doc(archive, member, path) for member in members]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not a readable .tar.gz archive ({type(e).__name__}: {e}); "
                        "the file is damaged; get it again (see ../shared/data/PROVENANCE.md)") from None


def _member_doc(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> Doc:
    where = f"{path}, member {member.name}"
    name = _MEMBER.fullmatch(member.name)
    if name is None or name[1] not in SUBJECTS:
        raise UserError(f"{where}: not a MATH test problem; members should be MATH/test/<subject>/<n>.json "
                        f"with <subject> one of {', '.join(SUBJECTS)}")
    try:
        row = json.loads(archive.extractfile(member).read().decode("utf-8"))  # type: ignore[union-attr]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: not valid UTF-8 JSON ({e})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return math_doc(row, f"{name[1]}/{name[2]}", name[1], where)


def exemplar_docs() -> list[Doc]:
    """Both prompts' exemplars, each marked by "pool" (select_shots keeps the one option
    math_prompt names)."""
    return ([{"id": f"minerva-{i}", "problem": p, "solution": s, "pool": "minerva"}
             for i, (p, s) in enumerate(MINERVA_PROMPT, 1)]
            + [{"id": f"exemplar-{i}", "problem": p, "solution": s, "pool": "llama_eval"}
               for i, (p, s) in enumerate(EXEMPLARS, 1)])


def minerva_gold(doc: Doc) -> str:
    return minerva_normalize(last_boxed(doc["solution"]) or "")


def minerva_prediction(completion: str) -> str | None:
    stated = minerva_answer(completion)
    return minerva_normalize(stated) if stated is not None else None


class MATH(GenerationTask):
    name = "math"
    paper_name = "MATH"
    paper_table = 7
    paper_shots = (4,)
    headline_metric = "acc"
    hf_dataset = ("EleutherAI/hendrycks_math", None, "test")  # one config per subject: SUBJECTS
    few_shot_pool = ("math_prompt=minerva: Minerva's 4-shot prompt; llama_eval: 4 worked examples written for "
                     "llama-eval; the same for every problem")
    until = ("\nProblem:", "\nSolution:", "I hope it is correct.")
    max_new_tokens = 512
    fixed_shots = True
    release_files = (RELEASE_FILE,)
    options = {
        "math_prompt": Option("minerva", "minerva: Minerva's 4-shot prompt; llama_eval: this project's 4 examples",
                              choices=PROMPTS),
        "math_grader": Option("minerva", "minerva: Minerva's normalisation + SymPy equivalence; llama_eval: "
                              "metrics.normalize_math_answer, string equality", choices=PROMPTS),
        **voting.voting_options("math"),
    }

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            return self.from_release(Path(data_dir))
        docs = []
        for subject in SUBJECTS:
            dataset = (self.hf_dataset[0], subject, "test")
            source = data.hf_source(dataset)
            docs += [math_doc(row, f"{subject}/{i}", subject, f"{source}, row {i + 1}")
                     for i, row in enumerate(data.load_hf(dataset))]
        return docs

    def from_release(self, data_dir: Path) -> list[Doc]:
        return read_archive(data.release_file(data_dir, RELEASE_FILE))

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        return exemplar_docs()

    def select_shots(self, doc: Doc, pool: Sequence[Doc], k: int, settings: Settings) -> list[Doc]:
        style = self.option(settings, "math_prompt")
        return super().select_shots(doc, [d for d in pool if d.get("pool", style) == style], k, settings)

    def prompt(self, doc: Doc, shots: list[Doc], style: str = "minerva") -> str:
        if style == "minerva":
            blocks = [f"Problem:\n{s['problem']}\n\nSolution:\n{s['solution']}" for s in shots]
            return "\n\n".join([*blocks, f"Problem:\n{doc['problem']}\n\nSolution:"])
        blocks = [f"Problem:\n{s['problem']}\n\nSolution:\n{s['solution']}\n\n" for s in shots]
        return "".join(blocks) + f"Problem:\n{doc['problem']}\n\nSolution:\n"

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings):
        prompt = self.prompt(doc, shots, self.option(settings, "math_prompt"))
        return [self.generation_request(prompt, settings, **kw) for kw in self.sampling(settings)]

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return voting.majority_regimes(settings, self, SAMPLES)

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        if self.option(settings, "math_grader") == "minerva":
            return voting.grade_by_vote(doc, completions, minerva_gold(doc), minerva_prediction,
                                        lambda a, gold: a is not None and answers_equivalent(a, gold))
        return voting.grade_by_vote(doc, completions, doc["answer"], math_answer, lambda a, gold: a == gold)
