"""Running one evaluation on many processes: data parallel, tensor parallel, or both.

    groups.py   joining torchrun's process group, tensor/data-parallel groups, failures
    data.py     the data-parallel split of requests and the gathering of results on rank 0
    tensor.py   tensor-parallel layers and loading this rank's slices of a checkpoint

Ranks r..r+tp-1 (r a multiple of tp) hold one model copy; the copies share the requests.
"""

from .data import BALANCE_SLACK, ROUNDS, gather_results, gather_to_main, iter_data_parallel, split_requests
from .groups import (
    DEFAULT_TIMEOUT_S, Dist, RankStopped, broadcast_object, init_from_env, rank_stopped, report_failure, shutdown,
)
from .tensor import (
    RowParallelLinear, TensorParallel, TPLayout, VocabParallelOutput, load_tensor_parallel, shard_modules,
    splits_evenly, vocab_parallel_logprobs,
)

__all__ = [
    "BALANCE_SLACK", "DEFAULT_TIMEOUT_S", "ROUNDS", "Dist", "RankStopped", "RowParallelLinear", "TPLayout",
    "TensorParallel", "VocabParallelOutput", "broadcast_object", "gather_results", "gather_to_main",
    "init_from_env", "iter_data_parallel", "load_tensor_parallel", "rank_stopped", "report_failure",
    "shard_modules", "shutdown", "split_requests", "splits_evenly", "vocab_parallel_logprobs",
]
