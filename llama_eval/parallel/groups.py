"""Process groups and failures: joining the run torchrun describes, and stopping every rank
with one clear error when one of them fails.

Launched by torchrun (`torchrun --nproc-per-node 8 -m llama_eval run --tp 4 ...`), every
process calls `init_from_env`, which joins the process group and cuts the ranks into
tensor-parallel groups of `tp` consecutive ranks (one model split across them) and
data-parallel groups (the ranks holding the same slice in every model copy).

Failure. A rank that raises records why in the rendezvous store before it exits
(`report_failure`); a collective that fails or waits longer than the timeout (default
DEFAULT_TIMEOUT_S, `--dist-timeout`) becomes RankStopped, a UserError that names the rank
when it is known and says to rerun the command, which resumes from the request cache.
Gloo raises such errors where they happen. NCCL reports a failed collective from its
watchdog thread after the same timeout and aborts the process; torchrun then stops the
remaining ranks and names the failed one.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as td

from ..config import RunConfig
from ..errors import UserError

DEFAULT_TIMEOUT_S = RunConfig.dist_timeout  # longest wait in one collective before the run stops
_FAILURE_KEY = "llama_eval/failure"  # rendezvous-store key where the first failing rank says why


class RankStopped(UserError):
    """Another rank died or stopped answering; this rank stops too."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the run. Ranks r..r+tp-1 (r a multiple of tp) hold one model."""

    rank: int
    world_size: int
    local_rank: int
    tp: int
    device: torch.device
    timeout_s: float
    tp_group: td.ProcessGroup | None  # the ranks sharing this model copy; None when tp == 1
    dp_group: td.ProcessGroup  # gloo: the ranks with this rank's tp_rank, one per model copy
    cpu_group: td.ProcessGroup  # gloo: every rank, for small Python objects
    store: td.Store  # the rendezvous store; a failing rank leaves its reason here

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.tp

    @property
    def dp_size(self) -> int:
        return self.world_size // self.tp

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reads and writes the cache and the run folder and shows progress."""
        return self.rank == 0


def init_from_env(tp: int = 1, device: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Dist | None:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); None when not launched by torchrun.

    device None: CUDA when available. On CUDA the backend is NCCL and this process uses GPU
    LOCAL_RANK (an index in `device` is ignored: torchrun starts one process per GPU); on the
    CPU it is gloo. tp consecutive ranks share one model; the world size must be a multiple
    of tp. timeout_s bounds every collective's wait (see the module docstring).
    """
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        if tp > 1:
            raise UserError(f"--tp {tp} splits the model across {tp} processes: launch with "
                            f"torchrun --nproc-per-node {tp} -m llama_eval run ... --tp {tp}")
        return None
    rank, world, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if tp < 1 or world % tp:
        divisors = ", ".join(str(d) for d in range(1, world + 1) if world % d == 0)
        raise UserError(f"--tp {tp} must divide the number of processes ({world}): use one of {divisors}")
    if timeout_s <= 0:
        raise UserError(f"--dist-timeout {timeout_s} must be a positive number of seconds")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(var):
            raise UserError(f"RANK is set but {var} is not; launch with torchrun, which sets both")
    use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"--device {device} was asked for but CUDA is not available here; use --device cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; "
                            "start at most one process per GPU (--nproc-per-node)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    timeout = dt.timedelta(seconds=timeout_s)
    # The store is made here, not by init_process_group, so that a failing rank can leave its
    # reason in it. torchrun's agent hosts it when TORCHELASTIC_USE_AGENT_STORE says so (it then
    # outlives the ranks); otherwise rank 0 hosts it, as env:// rendezvous does.
    agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = td.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world,
                        is_master=rank == 0 and not agent_store, timeout=timeout, multi_tenant=True)
    td.init_process_group("nccl" if use_cuda else "gloo", store=td.PrefixStore("llama_eval_pg", store),
                          rank=rank, world_size=world, timeout=timeout, device_id=dev if use_cuda else None)
    # Every rank creates every group, in the same order (new_group is collective).
    tp_groups = [td.new_group(list(range(s, s + tp)), timeout=timeout) for s in range(0, world, tp)] if tp > 1 else None
    dp_groups = [td.new_group(list(range(t, world, tp)), backend="gloo", timeout=timeout) for t in range(tp)]
    cpu_group = td.new_group(list(range(world)), backend="gloo", timeout=timeout)
    return Dist(rank, world, local_rank, tp, dev, timeout_s, tp_groups[rank // tp] if tp_groups else None,
                dp_groups[rank % tp], cpu_group, store)


def shutdown(dist: Dist | None) -> None:
    if dist is not None and td.is_initialized():
        td.destroy_process_group()


# ---------------------------------------------------------------------------- failures


@contextmanager
def report_failure(dist: Dist | None):
    """Around a rank's whole run: if it raises, leave the reason where the other ranks look
    when their next collective fails, then re-raise."""
    try:
        yield
    except RankStopped:
        raise
    except Exception as e:
        if dist is not None:
            _record_failure(dist, e)
        raise


def _record_failure(dist: Dist, error: BaseException) -> None:
    reason = f"rank {dist.rank} stopped with {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    try:  # the first failure wins: later ones are usually consequences of it
        dist.store.compare_set(_FAILURE_KEY, "", reason)
    except RuntimeError:
        pass  # the store's host is gone too; the other ranks will say the cause is unknown


def rank_stopped(dist: Dist, error: BaseException) -> RankStopped:
    """The error to raise when a collective of this rank failed (`error`)."""
    try:
        reason = dist.store.get(_FAILURE_KEY).decode() if dist.store.check([_FAILURE_KEY]) else None
    except RuntimeError:
        reason = None
    if reason is None:
        # Backends prefix their messages with a source location and add advice; keep the fact.
        text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip()).split(". ")[0][:300] or type(error).__name__
        reason = (f"another rank died or did not answer within the {dist.timeout_s:g} s timeout "
                  f"(--dist-timeout): {text}")
    return RankStopped(f"{reason}; rank {dist.rank} stopped too. Rerun the same command to resume from the "
                       "cache (results already gathered are kept); the failed rank's log has the cause")


def collective(dist: Dist, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:  # gloo and NCCL raise RuntimeError (DistError) for lost peers and timeouts
        raise rank_stopped(dist, e) from e


def broadcast_object(obj, dist: Dist):
    """Rank 0's `obj` on every rank (e.g. which requests rank 0's cache already answers)."""
    box = [obj if dist.is_main else None]
    collective(dist, td.broadcast_object_list, box, src=0, group=dist.cpu_group)
    return box[0]
