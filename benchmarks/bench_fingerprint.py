"""Cost of the weight fingerprint: hashing every byte of a weight file once, then the memo's answer.

    python benchmarks/bench_fingerprint.py --mib 512

Prints one JSON line: file size, seconds for the first hash (sha256 over the file), seconds for
the second (memoised by path, size, mtime and inode), throughput of the first.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from llama_eval.model.checkpoint import CACHE_DIR_ENV, file_sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the synthetic weight file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_DIR_ENV] = str(Path(tmp) / "cache")
        file = Path(tmp) / "consolidated.00.pth"
        with open(file, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        start = time.perf_counter()
        first = file_sha256(file)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        again = file_sha256(file)
        warm = time.perf_counter() - start
        assert first == again
    print(json.dumps({"bench": "fingerprint", "mib": args.mib, "first_s": round(cold, 3), "memoised_s": round(warm, 5),
                      "first_mib_per_s": round(args.mib / cold, 1)}))


if __name__ == "__main__":
    main()
