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
- Gold: the last \\boxed{...} of the solution (metrics.last_boxed), normalised.
- Shots: 4 (the count the Llama 2 paper gives for the same numbers): the four worked examples
  in EXEMPLARS, written for this project (Minerva's exemplars are not reused), the same for
  every problem. Answer format (CONVENTION): each solution ends with a line
  "The final answer is $<answer>$."
- Prompt (NOT STATED in the paper): "Problem:\\n{problem}\\n\\nSolution:\\n{solution}\\n\\n" per
  shot, then "Problem:\\n{problem}\\n\\nSolution:\\n". Generation stops at a line starting
  "Problem:" or "Solution:" (the model beginning another example), at most 512 new tokens
  (NOT STATED). Prompt, BOS and the 512 new tokens fit LLaMA's 2,048-token window for every
  problem but one (counting_and_probability/670, a 1,864-token prompt), which the engine cuts
  from the left and reports as truncated.
- Decoding and metrics, as for GSM8K:
    acc          one greedy sample per problem (the paper's plain column).
    maj1@{k}     k samples at temperature 0.6 (Minerva's; --temperature overrides), top-p from
                 --option math_top_p (default 1.0, plain sampling); the majority answer
                 (metrics.majority_vote over normalised answers) is scored. k = --samples,
                 default 256 as in the paper; --samples 0 skips the sampled regime.
  The answer is metrics.math_answer: what follows "The final answer is", else the last
  \\boxed{} of the completion, normalised by metrics.normalize_math_answer and compared with
  the normalised gold as strings.
"""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..metrics import last_boxed, math_answer, normalize_math_answer
from . import data, voting
from .base import Doc, DocScore, GenerationTask, Settings

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
    return [{"id": f"exemplar-{i}", "problem": problem, "solution": solution}
            for i, (problem, solution) in enumerate(EXEMPLARS, 1)]


class MATH(GenerationTask):
    name = "math"
    paper_name = "MATH"
    paper_table = 7
    paper_shots = (4,)
    headline_metric = "acc"
    hf_dataset = ("EleutherAI/hendrycks_math", None, "test")  # one config per subject: SUBJECTS
    few_shot_pool = "4 fixed worked examples written for llama-eval (EXEMPLARS), the same for every problem"
    until = ("\nProblem:", "\nSolution:")
    max_new_tokens = 512
    fixed_shots = True
    release_files = (RELEASE_FILE,)
    options = voting.voting_options("math")

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

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        blocks = [f"Problem:\n{s['problem']}\n\nSolution:\n{s['solution']}\n\n" for s in shots]
        return "".join(blocks) + f"Problem:\n{doc['problem']}\n\nSolution:\n"

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return voting.majority_regimes(settings, self, SAMPLES)

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        return voting.grade_by_vote(doc, completions, doc["answer"], math_answer, lambda a, gold: a == gold)
