"""Command line: argument parsing only. Every run default lives in evaluator.RunConfig.

A user error (unknown task or model, missing file, bad flag, malformed data, code execution
not allowed) prints one message naming the value and the fix and exits with status 2; the
traceback is shown only with --debug.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

from .errors import UserError
from .config import RunConfig

DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: same shape and exit status as ours
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,5,64") from None


def _task_shots(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, counts = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not TASK=K[,K...], e.g. nq_open=0,1,5,64")
    return name.strip(), _ints(counts)


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _model_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="preset (7b, 13b, 33b, 65b, llama2-7b, ...; looked up under "
                   "$LLAMA_EVAL_MODELS), a checkpoint folder or file, or random:<preset>")
    p.add_argument("--tokenizer", default=DEFAULTS["tokenizer"], help="SentencePiece .model file, if not beside the weights")
    p.add_argument("--device", default=DEFAULTS["device"], help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=DEFAULTS["dtype"], choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on cuda, float32 on cpu")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = _Parser(prog="llama-eval", description="Reproduce the LLaMA paper's benchmark tables.", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", parents=[common], help="evaluate a model on tasks; write result CSVs and paper-style tables")
    _model_flags(p)
    p.add_argument("--tasks", required=True, type=_names, help="comma-separated task names, or 'all'")
    p.add_argument("--shots", type=_ints, default=DEFAULTS["shots"], help="shot counts, e.g. 0,1,5,64 (default: the paper's)")
    p.add_argument("--task-shots", type=_task_shots, action="append", default=[],
                   help="shot counts for one task, e.g. nq_open=0,64 (repeatable; overrides --shots)")
    p.add_argument("--limit", type=int, default=DEFAULTS["limit"], help="first N documents of each task")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--data-dir", default=DEFAULTS["data_dir"], help="folder of release files (default: Hugging Face hub)")
    p.add_argument("--output", default=DEFAULTS["output"], help="run folder (default: runs/<model>)")
    p.add_argument("--batch-tokens", type=int, default=DEFAULTS["batch_tokens"], help="tokens per scoring forward (default: twice the model width)")
    p.add_argument("--max-batch", type=int, default=DEFAULTS["max_batch"], help="rows decoded together")
    p.add_argument("--no-prefix-sharing", dest="share_prefixes", action="store_false", help="for checking only")
    p.add_argument("--samples", type=int, default=DEFAULTS["samples"], help="generation samples per problem")
    p.add_argument("--temperature", type=float, default=DEFAULTS["temperature"])
    p.add_argument("--option", dest="options", action="append", default=[], help="task option name=value (repeatable)")
    p.add_argument("--allow-code-execution", action="store_true", help="let HumanEval run model-written code in the sandbox")
    p.add_argument("--include", action="append", default=[], help="a Python file defining extra tasks (repeatable)")
    p.add_argument("--cache", default=DEFAULTS["cache"], help="request cache file (default: <output>/cache.sqlite)")
    p.add_argument("--no-cache", dest="use_cache", action="store_false")
    p.add_argument("--paper-model", default=DEFAULTS["paper_model"], help="paper row to compare with, e.g. LLaMA-7B")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--tp", type=int, default=DEFAULTS["tp"], help="tensor-parallel ranks per model copy (under torchrun)")
    p.add_argument("--show-prompts", type=int, metavar="N", default=DEFAULTS["show_prompts"],
                   help="print the first N rendered prompts of each task and stop before loading the model")
    p.add_argument("--dist-timeout", type=float, default=DEFAULTS["dist_timeout"],
                   help="seconds a rank waits for the others before the run stops")

    p = sub.add_parser("plan", parents=[common], help="memory each GPU needs for a model, before any weights are read")
    p.add_argument("--model", required=True, help="preset or checkpoint folder")
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--gpu-memory", type=float, required=True, help="GiB per GPU")
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel size (default: the smallest that fits)")
    p.add_argument("--batch-tokens", type=int, default=DEFAULTS["batch_tokens"])
    p.add_argument("--max-batch", type=int, default=DEFAULTS["max_batch"])
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])

    p = sub.add_parser("score", parents=[common], help="log-likelihoods for your own {id, context, continuation} lines")
    _model_flags(p)
    p.add_argument("--requests", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--batch-tokens", type=int, default=DEFAULTS["batch_tokens"])

    p = sub.add_parser("generate", parents=[common], help="completions for your own {id, prompt, ...} lines")
    _model_flags(p)
    p.add_argument("--requests", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--max-batch", type=int, default=DEFAULTS["max_batch"])

    p = sub.add_parser("info", parents=[common], help="describe a checkpoint: format, config, parameters, files")
    _model_flags(p)

    p = sub.add_parser("execute", parents=[common], help="check code completions produced elsewhere in the sandbox; pass@k")
    p.add_argument("--samples", required=True, type=Path, help='JSON lines {"task_id", "completion"}')
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--problems", type=Path, help="HumanEval.jsonl.gz (default: <data-dir>/humaneval/HumanEval.jsonl.gz)")
    p.add_argument("--data-dir", default=DEFAULTS["data_dir"])
    p.add_argument("--k", type=_ints, default=(1, 10, 100))
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per program")
    p.add_argument("--allow-code-execution", action="store_true")

    p = sub.add_parser("compare", parents=[common], help="what changed between runs, and is it significant")
    p.add_argument("runs", nargs="+", type=Path, help="run folders or CSV files")
    p.add_argument("--fail-below", type=float, default=None, help="exit 1 if a metric drops significantly by more than this many points")

    p = sub.add_parser("table", parents=[common], help="the paper's tables filled from runs")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--format", default="md", choices=["md", "latex", "csv"])
    p.add_argument("--tables", type=_ints, default=(3, 4, 5, 6, 7, 8, 9))
    p.add_argument("--diff", action="store_true", help="add our-minus-paper rows")
    p.add_argument("--plot", type=Path, help="also write a PNG of each task's value against the paper's")

    p = sub.add_parser("demo", parents=[common], help="every task end to end on a tiny random model, offline, in a minute")
    p.add_argument("--output", type=Path, default=Path("runs/demo"))
    p.add_argument("--allow-code-execution", action="store_true", help="include HumanEval (runs model-written code)")

    sub.add_parser("tasks", parents=[common], help="list tasks: splits, shots, metrics, paper table")
    sub.add_parser("models", parents=[common], help="list presets and where weights are looked for")
    p = sub.add_parser("data", parents=[common], help="data files")
    p.add_argument("action", choices=["verify"])
    p.add_argument("--data-dir", required=True, type=Path)
    return parser


def cmd_run(args) -> int:
    from . import reporting
    from .evaluator import evaluate
    from .tasks import get_task, include, names

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if values["tasks"] == ("all",):
        for path in values["include"]:  # their tasks count as part of "all"
            include(path)
        every = [get_task(n) for n in names()]
        values["tasks"] = tuple(t.name for t in every if values["allow_code_execution"] or not t.needs_code_execution)
        if left := [t.name for t in every if t.name not in values["tasks"]]:
            print(f"llama-eval: --tasks all leaves out {', '.join(left)}: they run model-written code "
                  "(add --allow-code-execution to include them)", file=sys.stderr)
    for key in ("options", "include", "task_shots"):
        values[key] = tuple(values[key])
    outcome = evaluate(RunConfig(**values))
    if outcome is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    run = reporting.load_run(outcome.run_dir)
    for table in reporting.tables_for([run]):
        print(reporting.paper_table(table, [run], "md", show_diff=True))
    print(f"results: {outcome.run_dir}")
    return 0


def cmd_score(args) -> int:
    from . import load_model
    from .engine.scoring import Scorer
    from .requests import LoglikelihoodRequest
    from .tasks.data import field, read_jsonl

    rows = list(read_jsonl(args.requests))
    reqs = [LoglikelihoodRequest(field(r, "context", args.requests, n), field(r, "continuation", args.requests, n)) for n, r in rows]
    model, tok = load_model(args.model, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer)
    scorer = Scorer(model, tok, args.batch_tokens)
    start = time.monotonic()
    results = _with_bar(scorer.iter_loglikelihood(reqs), len(reqs), "scoring", lambda: scorer.stats.tokens_run)
    with open(args.output, "w") as f:
        for (_, row), res in zip(rows, results):
            f.write(json.dumps({"id": row.get("id"), "logprob": res.logprob, "is_greedy": res.is_greedy,
                                "n_tokens": res.n_tokens}) + "\n")
    s = scorer.stats
    print(f"{s.requests} requests, {s.tokens_run} tokens run ({s.tokens_naive} without prefix sharing), "
          f"{s.truncated} truncated, {time.monotonic() - start:.1f} s")
    return 0


def cmd_generate(args) -> int:
    from . import load_model
    from .engine.generation import Generator
    from .requests import GenerationRequest
    from .tasks.data import read_jsonl

    rows = list(read_jsonl(args.requests))
    keys = {f.name for f in dataclasses.fields(GenerationRequest)}
    reqs = []
    for n, row in rows:
        if not isinstance(row.get("prompt"), str):
            raise UserError(f"{args.requests}, line {n}: field 'prompt' is missing or not a string")
        extra = {k: (tuple(v) if k == "until" else v) for k, v in row.items() if k in keys}
        reqs.append(GenerationRequest(**extra))
    model, tok = load_model(args.model, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer)
    gen = Generator(model, tok, max_batch=args.max_batch)
    start = time.monotonic()
    results = _with_bar(gen.iter_generate(reqs), len(reqs), "generating", lambda: gen.stats.generated_tokens)
    with open(args.output, "w") as f:
        for (_, row), res in zip(rows, results):
            f.write(json.dumps({"id": row.get("id"), "completions": list(res.completions)}) + "\n")
    print(f"{len(reqs)} requests, {gen.stats.generated_tokens} tokens generated, {time.monotonic() - start:.1f} s")
    return 0


def _with_bar(results, total: int, desc: str, tokens) -> list:
    """Collect (index, result) pairs into input order, with a progress bar showing tokens/s."""
    from tqdm import tqdm

    out = [None] * total
    start = time.monotonic()
    with tqdm(total=total, desc=desc, unit="req", dynamic_ncols=True) as bar:
        for i, res in results:
            out[i] = res
            bar.update()
            bar.set_postfix_str(f"{tokens() / max(time.monotonic() - start, 1e-9):.0f} tok/s", refresh=False)
    return out


def cmd_info(args) -> int:
    from .model.checkpoint import describe, load_checkpoint

    loaded = load_checkpoint(args.model, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer)
    print(json.dumps(describe(loaded), indent=2, default=str))
    return 0


def cmd_execute(args) -> int:
    from . import execution

    execution.require_permission(args.allow_code_execution)
    for note in execution.probe_isolation().notes:
        print(f"sandbox: {note}", file=sys.stderr)
    problems_path = args.problems or (Path(args.data_dir) / "humaneval" / "HumanEval.jsonl.gz" if args.data_dir else None)
    if problems_path is None:
        raise UserError("execute needs the problems: pass --problems HumanEval.jsonl.gz or --data-dir DIR")
    problems = execution.load_humaneval_problems(problems_path)
    summary = execution.execute_samples(args.samples, problems, args.output, ks=args.k, timeout=args.timeout)
    print(json.dumps(summary))
    return 0


def cmd_compare(args) -> int:
    from . import reporting

    runs = [reporting.load_run(p) for p in args.runs]
    df, code = reporting.compare(runs, args.fail_below)
    print(reporting.format_compare(df))
    return code


def cmd_table(args) -> int:
    from . import reporting

    runs = [reporting.load_run(p) for p in args.runs]
    for t in args.tables:
        print(reporting.paper_table(t, runs, args.format, show_diff=args.diff))
    if args.plot:
        from .plotting import plot

        plot(runs, args.plot)
        print(f"plot: {args.plot}")
    return 0


def cmd_plan(args) -> int:
    from .parallel_plan import cmd_plan_text

    print(cmd_plan_text(args.model, args.gpus, args.gpu_memory, tp=args.tp, batch_tokens=args.batch_tokens,
                        max_batch=args.max_batch, dtype=args.dtype))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.output, args.allow_code_execution)


def cmd_tasks(args) -> int:
    from .tasks import get_task, names

    print(f"{'task':<14} {'paper name':<18} {'table':>5}  {'shots':<10} {'metric':<12} dataset (hub)")
    for name in names():
        t = get_task(name)
        hub = "/".join(x for x in t.hf_dataset[:2] if x) + (f" [{t.hf_dataset[2]}]" if t.hf_dataset[2] else "")
        shots = ",".join(map(str, t.paper_shots))
        print(f"{name:<14} {t.paper_name:<18} {t.paper_table or '':>5}  {shots:<10} {t.headline_metric:<12} {hub}")
    return 0


def cmd_models(args) -> int:
    import os

    from .model.checkpoint import MODELS_ENV, PRESET_FOLDERS, RANDOM_PREFIX
    from .model.llama import PRESETS, count_parameters, build

    root = os.environ.get(MODELS_ENV)
    print(f"${MODELS_ENV} = {root or '(not set)'}")
    print(f"{'preset':<12} {'parameters':>14}  {'window':>6}  looked for as")
    for name, args in PRESETS.items():
        where = ", ".join(f"${MODELS_ENV}/{f}" for f in PRESET_FOLDERS.get(name, ())) or f"{RANDOM_PREFIX}{name} only"
        print(f"{name:<12} {count_parameters(build(args)):>14,}  {args.max_seq_len:>6}  {where}")
    print(f"Any checkpoint folder or llama2.c .bin also works as --model PATH; {RANDOM_PREFIX}<preset> gives random weights.")
    return 0


def cmd_data(args) -> int:
    from .tasks.data import verify_data_dir

    bad = 0
    for rel, status in verify_data_dir(args.data_dir):
        print(f"{status:<9} {rel}")
        bad += status != "ok"
    print(f"{bad} problem(s)")
    return 1 if bad else 0


COMMANDS = {
    "run": cmd_run, "score": cmd_score, "generate": cmd_generate, "info": cmd_info, "execute": cmd_execute,
    "compare": cmd_compare, "table": cmd_table, "demo": cmd_demo, "tasks": cmd_tasks, "models": cmd_models,
    "data": cmd_data, "plan": cmd_plan,
}


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"llama-eval: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _one_line_warning
            return COMMANDS[args.command](args)
    except UserError as e:
        if debug:
            raise
        print(f"llama-eval: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llama-eval: interrupted; run the same command again to resume from the cache", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
