"""Command line: argument parsing only. Every run default lives in config.RunConfig.

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
from .config import DTYPES, SANDBOX_TIMEOUT_S, RunConfig

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


def _tables(text: str) -> tuple[int, ...]:
    from .tables import PAPER_TABLES  # no torch: the paper's table layout only

    known = ", ".join(map(str, PAPER_TABLES))
    try:
        numbers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the paper's table numbers, e.g. 3,9; tables here: {known}") from None
    if bad := [n for n in numbers if n not in PAPER_TABLES]:
        raise argparse.ArgumentTypeError(f"no paper table {', '.join(map(str, bad))}; tables here: {known}")
    return numbers


def _model_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="preset (7b, 13b, 33b, 65b, llama2-7b, llama3.1-8b, ...; looked "
                   "up under $LLAMA_EVAL_MODELS), a checkpoint folder or file, a Hugging Face id org/name[@revision], "
                   "or random:<preset>")
    p.add_argument("--tokenizer", default=DEFAULTS["tokenizer"],
                   help="tokenizer.model or tokenizer.json, if not beside the weights")
    p.add_argument("--max-len", type=int, default=DEFAULTS["max_len"],
                   help="context window in tokens, which sizes the KV cache (default: the model's, at most 8192)")
    p.add_argument("--device", default=DEFAULTS["device"], help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=DEFAULTS["dtype"], choices=DTYPES,
                   help="default: bfloat16 on cuda, float32 on cpu")


def _sub(sub, name: str, common, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example."""
    return sub.add_parser(name, parents=[common], help=help, description=help[:1].upper() + help[1:] + ".",
                          epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = _Parser(prog="llama-eval", description="Reproduce the LLaMA paper's benchmark tables.", parents=[common],
                     epilog="example:\n  llama-eval demo\n  llama-eval run --model 7b --tasks mmlu,piqa --data-dir ../shared/data",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"llama-eval {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = _sub(sub, "run", common, "evaluate a model on tasks; write result CSVs and paper-style tables",
             "llama-eval run --model 7b --tasks mmlu,piqa --data-dir ../shared/data --limit 20")
    _model_flags(p)
    p.add_argument("--tasks", required=True, type=_names, help="comma-separated task names, or 'all' (see `llama-eval tasks`)")
    p.add_argument("--shots", type=_ints, default=DEFAULTS["shots"], help="shot counts, e.g. 0,1,5,64 (default: the paper's)")
    p.add_argument("--task-shots", type=_task_shots, action="append", default=[],
                   help="shot counts for one task, e.g. nq_open=0,64 (repeatable; overrides --shots)")
    p.add_argument("--limit", type=int, default=DEFAULTS["limit"],
                   help="first N documents of each task, or of each group where a task has groups (MMLU: N per subject)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of few-shot selection and sampling (default: %(default)s)")
    p.add_argument("--data-dir", default=DEFAULTS["data_dir"], help="folder of release files (default: Hugging Face hub)")
    p.add_argument("--output", default=DEFAULTS["output"], help="run folder (default: runs/<model>-<fingerprint>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of another run in --output")
    p.add_argument("--append", action="store_true", help="add tasks to --output, which holds the same model and config")
    p.add_argument("--batch-tokens", type=int, default=DEFAULTS["batch_tokens"], help="tokens per scoring forward (default: twice the model width)")
    p.add_argument("--max-batch", type=int, default=DEFAULTS["max_batch"], help="rows decoded together (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULTS["max_new_tokens"],
                   help="tokens generated at most per completion, for every generation task (default: each task's, "
                        "clamped to half the model's window with a warning)")
    p.add_argument("--no-prefix-sharing", dest="share_prefixes", action="store_false",
                   help="run every request's context in full (for checking the engine only)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=DEFAULTS["compile"],
                   help="fuse RMSNorm, residual adds, rotary and SiLU gate (torch.compile; default: on with CUDA; "
                        "the CPU needs a C++ compiler); moves results only by float rounding: not in the config hash")
    p.add_argument("--samples", type=int, default=DEFAULTS["samples"],
                   help="generation samples per problem: k of maj1@k (GSM8K, MATH), n of pass@k (HumanEval, MBPP)")
    p.add_argument("--temperature", type=float, default=DEFAULTS["temperature"],
                   help="sampling temperature for every sampled regime (default: each task's, the paper's)")
    p.add_argument("--option", dest="options", action="append", default=[],
                   help="task option name=value (repeatable; `llama-eval tasks NAME` lists a task's options)")
    p.add_argument("--allow-code-execution", action="store_true", help="let HumanEval and MBPP run model-written code in the sandbox")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="run that code even where the sandbox has no kernel isolation (limits only)")
    p.add_argument("--include", action="append", default=[], help="a Python file defining extra tasks (repeatable)")
    p.add_argument("--include-override", action="store_true",
                   help="let an --include task replace a built-in task of the same name")
    p.add_argument("--cache", default=DEFAULTS["cache"], help="request cache file (default: <output>/cache.sqlite)")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", help="neither read nor write the request cache")
    p.add_argument("--paper-model", default=DEFAULTS["paper_model"], help="paper row to compare with, e.g. LLaMA-7B")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="plain progress lines every 30 s instead of a progress bar (also when stderr is not a terminal)")
    p.add_argument("--tp", type=int, default=DEFAULTS["tp"], help="tensor-parallel ranks per model copy (under torchrun)")
    p.add_argument("--show-prompts", type=int, metavar="N", default=DEFAULTS["show_prompts"],
                   help="print the first N rendered prompts of each task and stop before loading the model")
    p.add_argument("--dist-timeout", type=float, default=DEFAULTS["dist_timeout"],
                   help="seconds a rank waits for the others before the run stops")

    p = _sub(sub, "plan", common, "memory each GPU needs for a model, before any weights are read",
             "llama-eval plan --model 7b --gpus 1 --gpu-memory 24 --tasks mmlu")
    p.add_argument("--model", required=True, help="preset or checkpoint folder")
    p.add_argument("--gpus", type=int, required=True, help="GPUs available")
    p.add_argument("--gpu-memory", type=float, required=True, help="GiB per GPU")
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel size (default: the smallest that fits)")
    p.add_argument("--tasks", type=_names, default=None,
                   help="the tasks to run: the generation cache is budgeted only if one of them generates "
                        "(default: assume one does)")
    p.add_argument("--batch-tokens", type=int, default=DEFAULTS["batch_tokens"],
                   help="tokens per scoring forward (default: twice the model width)")
    p.add_argument("--max-batch", type=int, default=DEFAULTS["max_batch"], help="rows decoded together (default: %(default)s)")
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="default: %(default)s")

    p = _sub(sub, "score", common, "log-likelihoods for your own {id, context, continuation} lines",
             "llama-eval score --model 7b --requests pairs.jsonl --output scores.jsonl")
    _model_flags(p)
    p.add_argument("--requests", required=True, type=Path, help='JSON lines {"id", "context", "continuation"}')
    p.add_argument("--output", required=True, type=Path, help='JSON lines {"id", "logprob", "is_greedy", "n_tokens"}')
    p.add_argument("--batch-tokens", type=int, default=DEFAULTS["batch_tokens"],
                   help="tokens per scoring forward (default: twice the model width)")

    p = _sub(sub, "generate", common, "completions for your own {id, prompt, ...} lines",
             "llama-eval generate --model 7b --requests prompts.jsonl --output completions.jsonl")
    _model_flags(p)
    p.add_argument("--requests", required=True, type=Path,
                   help='JSON lines {"id", "prompt"} plus optional until, max_new_tokens, temperature, top_p, n, seed')
    p.add_argument("--output", required=True, type=Path, help='JSON lines {"id", "completions"}')
    p.add_argument("--max-batch", type=int, default=DEFAULTS["max_batch"], help="rows decoded together (default: %(default)s)")

    p = _sub(sub, "info", common, "describe a checkpoint: format, config, parameters, files",
             "llama-eval info --model /models/llama/7B --device cpu")
    _model_flags(p)

    p = _sub(sub, "convert", common, "write a checkpoint in Hugging Face's or Meta's layout",
             "llama-eval convert 7b /models/llama-7b-hf --to hf")
    p.add_argument("src", help="any --model spec: preset, folder, file or Hugging Face id")
    p.add_argument("dst", type=Path, help="a new folder")
    p.add_argument("--to", required=True, choices=["hf", "meta"], help="the layout to write")
    p.add_argument("--dtype", choices=DTYPES, help="default: as the weights are stored")
    p.add_argument("--tokenizer", help="tokenizer.model or tokenizer.json, if not beside the weights")

    p = _sub(sub, "execute", common, "check code completions produced elsewhere in the sandbox; pass@k",
             "llama-eval execute --samples samples.jsonl --output results.jsonl --data-dir ../shared/data --allow-code-execution")
    p.add_argument("--samples", required=True, type=Path, help='JSON lines {"task_id", "completion"}')
    p.add_argument("--output", required=True, type=Path, help="JSON lines, one verdict per sample")
    p.add_argument("--problems", type=Path, help="HumanEval.jsonl.gz (default: <data-dir>/humaneval/HumanEval.jsonl.gz)")
    p.add_argument("--data-dir", default=DEFAULTS["data_dir"], help="folder of release files holding humaneval/")
    p.add_argument("--k", type=_ints, default=(1, 10, 100), help="k values of pass@k (default: 1,10,100)")
    p.add_argument("--timeout", type=float, default=SANDBOX_TIMEOUT_S, help="seconds per program (default: %(default)s)")
    p.add_argument("--allow-code-execution", action="store_true", help="required: the samples are model-written code")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="run that code even where the sandbox has no kernel isolation (limits only)")

    p = _sub(sub, "compare", common, "what changed between runs, and is it significant",
             "llama-eval compare runs/7b-seed1 runs/7b-seed2 --fail-below 1")
    p.add_argument("runs", nargs="+", type=Path, help="run folders or CSV files; the first is the baseline")
    p.add_argument("--fail-below", type=float, default=None,
                   help="exit 1 if a headline metric drops significantly by more than this many points")
    p.add_argument("--all-metrics", action="store_true",
                   help="show, mark and gate secondary metrics too (acc_raw, acc_chars, ...)")
    p.add_argument("--intersect", action="store_true",
                   help="compare the documents the runs share instead of refusing runs over different documents")

    p = _sub(sub, "table", common, "the paper's tables filled from runs",
             "llama-eval table runs/mymodel --paper-model LLaMA-7B --diff --plot vs_paper.png")
    p.add_argument("runs", nargs="+", type=Path, help="run folders or summary.csv files")
    p.add_argument("--format", default="md", choices=["md", "latex", "csv"],
                   help="md, latex, or csv: one tidy CSV (table, row, kind, column, value, stderr, n, note)")
    p.add_argument("--tables", type=_tables, default=None, help="paper table numbers, e.g. 3,9 (default: those the runs fill)")
    p.add_argument("--diff", action="store_true", help="add our-minus-paper rows")
    p.add_argument("--stderr", action="store_true", help="print each of our values with its standard error")
    p.add_argument("--paper-model", default=None,
                   help="the paper's model to compare with (e.g. LLaMA-7B), for runs of models the paper lacks")
    p.add_argument("--plot", type=Path, help="also write a PNG: our values with 95%% intervals, the paper's, chance")

    p = _sub(sub, "demo", common, "every task end to end on a tiny random model, offline, in a minute",
             "llama-eval demo --output runs/demo")
    p.add_argument("--output", type=Path, default=Path("runs/demo"), help="run folder (default: %(default)s)")
    p.add_argument("--allow-code-execution", action="store_true", help="include HumanEval and MBPP (runs model-written code)")

    p = _sub(sub, "export", common, "write a run in another tool's format (lm-eval's results and samples)",
             "llama-eval export runs/7b-1a2b3c4d --format lm-eval")
    p.add_argument("run", type=Path, help="run folder written by `llama-eval run`")
    p.add_argument("--format", required=True, choices=["lm-eval"], help="lm-eval: its results JSON and samples JSONL")
    p.add_argument("--output", type=Path, default=None, help="folder (default: RUN/lm-eval); files go in <output>/<model>/")
    p.add_argument("--data-dir", default=None, help="data the run read, to rebuild its prompts (default: the run's)")

    p = _sub(sub, "tasks", common, "list tasks; `tasks NAME` describes one, with its options", "llama-eval tasks race_high")
    p.add_argument("name", nargs="?", help="a task to describe: data, shots, metric and every --option it declares")
    _sub(sub, "models", common, "list presets and where weights are looked for", "LLAMA_EVAL_MODELS=/models/llama llama-eval models")
    p = _sub(sub, "data", common, "data files: check them, or download them",
             "llama-eval data download --data-dir data --tasks piqa,boolq")
    p.add_argument("action", choices=["verify", "download"],
                   help="verify: check every release file's presence and checksum; download: fetch them")
    p.add_argument("--data-dir", required=True, type=Path, help="folder of release files")
    p.add_argument("--tasks", type=_names, default=None, help="download: only these tasks' files (default: all)")
    p.add_argument("--base-url", default=None, help="download: fetch <base-url>/<path> from a mirror instead")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="download: no progress bar")
    return parser


def cmd_run(args) -> int:
    from . import reporting
    from .evaluator import evaluate
    from .tasks import get_task, include, names

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if values["tasks"] == ("all",):
        for path in values["include"]:  # their tasks count as part of "all"
            include(path, override=values["include_override"])
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
    print_results(run)
    print(f"results: {outcome.run_dir}")
    return 0


def print_results(run) -> None:
    """What `run` and `demo` print at the end: the paper's tables the run fills (with standard
    errors and caveat marks), a plain table of everything else, and the caveats again on stderr."""
    from . import tables

    for table in tables.tables_for([run]):
        print(tables.paper_table(table, [run], "md", show_diff=True, show_stderr=True))
    if other := tables.results_table([run]):
        print(other)
    for note in tables.caveats(run.info):
        print(f"llama-eval: warning: {note}", file=sys.stderr)


def cmd_score(args) -> int:
    from . import load_model
    from .engine.scoring import Scorer
    from .requests import LoglikelihoodRequest
    from .tasks.data import field, read_records

    _distinct_output(args.output, args.requests, "--requests")
    rows = list(read_records(args.requests))
    reqs = [LoglikelihoodRequest(field(r, "context", args.requests, n), field(r, "continuation", args.requests, n)) for n, r in rows]
    model, tok = load_model(args.model, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer,
                            max_seq_len=args.max_len)
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
    from .tasks.data import read_records

    _distinct_output(args.output, args.requests, "--requests")
    rows = list(read_records(args.requests))
    reqs = [generation_request(row, args.requests, n) for n, row in rows]
    model, tok = load_model(args.model, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer,
                            max_seq_len=args.max_len)
    gen = Generator(model, tok, max_batch=args.max_batch)
    start = time.monotonic()
    results = _with_bar(gen.iter_generate(reqs), len(reqs), "generating", lambda: gen.stats.generated_tokens)
    with open(args.output, "w") as f:
        for (_, row), res in zip(rows, results):
            f.write(json.dumps({"id": row.get("id"), "completions": list(res.completions)}) + "\n")
    print(f"{len(reqs)} requests, {gen.stats.generated_tokens} tokens generated, {time.monotonic() - start:.1f} s")
    return 0


def _distinct_output(output: Path, source: Path, flag: str) -> None:
    """Refuse an --output that would overwrite the input file, or that is a folder."""
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; give the path of the file to write")
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: the folder {output.parent} does not exist; create it first")
    if output.exists() and source.exists() and output.samefile(source):
        raise UserError(f"--output {output} is the {flag} file itself; write the results to another file")


def generation_request(row: dict, path: Path, n: int):
    """A GenerationRequest from one JSON line, every field checked (a bad one names file and line)."""
    import math

    from .requests import GenerationRequest

    def bad(name: str, rule: str):
        raise UserError(f"{path}, line {n}: field {name!r} {rule} (got {json.dumps(row.get(name))[:60]})")

    known = {f.name for f in dataclasses.fields(GenerationRequest)} | {"id"}
    if unknown := sorted(set(row) - known):
        bad(unknown[0], f"is not a request field; the fields are {', '.join(sorted(known))}")
    if not isinstance(row.get("prompt"), str):
        bad("prompt", "is missing or not a string")
    until = row.get("until", [])
    if not (isinstance(until, list) and all(isinstance(u, str) and u for u in until)):
        bad("until", 'must be a list of non-empty strings, e.g. ["\\n"]')
    for name, low in (("max_new_tokens", 1), ("n", 1), ("seed", 0)):
        if name in row and not (type(row[name]) is int and row[name] >= low):
            bad(name, f"must be a whole number, {low} or more")
    for name, ok, rule in (("temperature", lambda x: x >= 0, "0 or more (0 is greedy)"),
                           ("top_p", lambda x: 0 < x <= 1, "in (0, 1]")):
        value = row.get(name, 1.0)
        if not (type(value) in (int, float) and math.isfinite(value) and ok(value)):
            bad(name, f"must be a finite number {rule}")
    fields = {k: v for k, v in row.items() if k != "id"}
    return GenerationRequest(**{**fields, "until": tuple(until)})


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

    loaded = load_checkpoint(args.model, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer,
                             max_seq_len=args.max_len)
    print(json.dumps(describe(loaded), indent=2, default=str))
    return 0


def cmd_convert(args) -> int:
    from .model.convert import convert

    dst = convert(args.src, args.dst, args.to, args.dtype, args.tokenizer)
    print(f"wrote {dst} ({args.to} layout)")
    return 0


def cmd_execute(args) -> int:
    from . import execution
    from .tasks import humaneval

    execution.require_permission(args.allow_code_execution)
    _distinct_output(args.output, args.samples, "--samples")
    if not (0 < args.timeout < float("inf")):
        raise UserError(f"--timeout {args.timeout}: must be a finite number of seconds above 0")
    problems_path = args.problems or (Path(args.data_dir) / "humaneval" / "HumanEval.jsonl.gz" if args.data_dir else None)
    if problems_path is None:
        raise UserError("execute needs the problems: pass --problems HumanEval.jsonl.gz or --data-dir DIR")
    problems = humaneval.load_problems(problems_path)
    print(execution.require_isolation(args.allow_unsandboxed).describe(), file=sys.stderr)
    summary = humaneval.execute_samples(args.samples, problems, args.output, ks=args.k, timeout=args.timeout,
                                        allow_unsandboxed=args.allow_unsandboxed)
    print(json.dumps(summary))
    return 0


def cmd_compare(args) -> int:
    from . import reporting
    from .compare import compare, format_compare

    runs = [reporting.load_run(p) for p in args.runs]
    result = compare(runs, args.fail_below, all_metrics=args.all_metrics, intersect=args.intersect)
    print(format_compare(result))
    return result.exit_code


def cmd_table(args) -> int:
    from . import reporting, tables

    runs = [reporting.load_run(p) for p in args.runs]
    if args.paper_model:
        runs = [tables.with_paper_model(run, args.paper_model) for run in runs]
    chosen = args.tables or tuple(tables.tables_for(runs)) or tuple(tables.PAPER_TABLES)
    if args.format == "csv":
        sys.stdout.write(tables.tidy_tables(chosen, runs, show_diff=args.diff))
    else:
        for t in chosen:
            print(tables.paper_table(t, runs, args.format, show_diff=args.diff, show_stderr=args.stderr))
        if args.format == "md" and (other := tables.results_table(runs)):
            print(other)
    if args.plot:
        from .plotting import plot

        plot(runs, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr if args.format == "csv" else sys.stdout)
    return 0


def cmd_plan(args) -> int:
    from .parallel_plan import plan_memory, format_plan

    report = plan_memory(args.model, args.gpus, args.gpu_memory, tp=args.tp, batch_tokens=args.batch_tokens,
                         max_batch=args.max_batch, dtype=args.dtype, tasks=args.tasks)
    print(format_plan(report))
    return 0 if report["fits"] else 1


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.output, args.allow_code_execution)


def cmd_tasks(args) -> int:
    from .tasks import get_task, names

    if args.name:
        return _describe_task(get_task(args.name))
    print(f"{'task':<14} {'paper name':<18} {'table':>5}  {'shots':<10} {'metric':<12} dataset (hub)")
    for name in names():
        t = get_task(name)
        hub = "/".join(x for x in t.hf_dataset[:2] if x) + (f" [{t.hf_dataset[2]}]" if t.hf_dataset[2] else "")
        shots = ",".join(map(str, t.paper_shots))
        print(f"{name:<14} {t.paper_name:<18} {t.paper_table or '':>5}  {shots:<10} {t.headline_metric:<12} {hub}")
    return 0


def _describe_task(task) -> int:
    path, config, split = task.hf_dataset
    print(f"{task.name}: {task.paper_name}" + (f" (the paper's Table {task.paper_table})" if task.paper_table else ""))
    print(f"  shots: {', '.join(map(str, task.paper_shots))} (paper); metric: {task.headline_metric}")
    print(f"  data: hub {'/'.join(x for x in (path, config) if x)} [{split}]; release files "
          f"{', '.join(task.release_files) or '(see the task file)'} [{task.release_split}]")
    if task.few_shot_pool:
        print(f"  few-shot pool: {task.few_shot_pool}")
    if not task.options:
        print("  options: none")
    for name, option in task.options.items():
        allowed = f" ({' | '.join(option.choices)})" if option.choices else ""
        print(f"  --option {name}={option.default!r}{allowed}: {option.help}")
    return 0


def cmd_models(args) -> int:
    import os

    from .model.checkpoint import MODELS_ENV, RANDOM_PREFIX, meta_network
    from .model.llama import count_parameters
    from .model.presets import PRESETS

    root = os.environ.get(MODELS_ENV)
    print(f"${MODELS_ENV} = {root or '(not set: presets cannot be found; set it to the folder holding 7B, 13B, ...)'}")
    print(f"{'preset':<13} {'parameters':>14}  {'window':>6}  {'status':<8} looked for as")
    found = []
    for name, p in PRESETS.items():
        where = ", ".join(f"${MODELS_ENV}/{f}" for f in p.folders) or f"{RANDOM_PREFIX}{name} only"
        hub = f", or --model {p.hub}" if p.hub else ""
        hit = next((Path(root).expanduser() / f for f in p.folders if root and (Path(root).expanduser() / f).is_dir()), None)
        status = "found" if hit else "missing" if p.folders else "random"
        if hit:
            found.append(f"{name} ({hit})")
        print(f"{name:<13} {count_parameters(meta_network(p.args)):>14,}  {p.args.max_seq_len:>6}  {status:<8} {where}{hub}")
    print(f"found under ${MODELS_ENV}: {', '.join(found) if found else 'none'}")
    print(f"Any checkpoint folder or llama2.c .bin also works as --model PATH; {RANDOM_PREFIX}<preset> gives random weights.")
    return 0


def cmd_data(args) -> int:
    from .tasks.data import verify_data_dir

    if args.action == "download":
        from .download import download

        written = download(args.data_dir, args.tasks, args.base_url, args.progress)
        print(f"{len(written)} file(s) written to {args.data_dir}, each checked against the sha256 manifest")
        return 0

    if not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder; give the folder holding the release files "
                        "(e.g. ../shared/data)")
    bad = 0
    for rel, status in verify_data_dir(args.data_dir):
        print(f"{status:<9} {rel}")
        bad += status != "ok"
    print(f"{bad} problem(s)")
    return 1 if bad else 0


def cmd_export(args) -> int:
    from .export import export_lm_eval

    files, counts = export_lm_eval(args.run, args.output, args.data_dir)
    for f in files:
        print(f)
    print(f"{counts['answered']} of {counts['requests']} requests have their model answers (from the run's cache)")
    return 0


COMMANDS = {
    "convert": cmd_convert,
    "run": cmd_run, "score": cmd_score, "generate": cmd_generate, "info": cmd_info, "execute": cmd_execute,
    "compare": cmd_compare, "table": cmd_table, "demo": cmd_demo, "tasks": cmd_tasks, "models": cmd_models,
    "data": cmd_data, "plan": cmd_plan, "export": cmd_export,
}


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"llama-eval: warning: {message}", file=sys.stderr)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else "no details"


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
    except BrokenPipeError:  # `llama-eval ... | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0
    except (OSError, UnicodeError, ValueError, TypeError) as e:
        # Input the boundary checks did not foresee (a full disk, undecodable bytes, a wrongly
        # typed field): still one line, and the traceback on request.
        if debug:
            raise
        print(f"llama-eval: error: {type(e).__name__}: {_first_line(e)} (run again with --debug for the traceback)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llama-eval: interrupted; run the same command again to resume from the cache", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`llama-eval table ... | head`): not an error. Point stdout at
        # devnull so that the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
