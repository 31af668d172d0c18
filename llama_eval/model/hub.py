"""Hugging Face hub ids as model specs: `org/name` or `org/name@revision`.

The repository is fetched with huggingface_hub's snapshot_download into its standard cache
(HF_HOME / HF_HUB_CACHE), only the files the loader reads: configs, tokenizer files and
safetensors weights (pytorch_model*.bin only for repositories without safetensors). With
HF_HUB_OFFLINE=1 a snapshot already in the cache is used and nothing is downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError

_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")
_CONFIGS = ["*.json", "tokenizer.model"]


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.fullmatch(text))


def snapshot(spec: str) -> tuple[Path, str]:
    """(snapshot folder, commit hash) of the hub repository `spec` names (org/name[@revision])."""
    match = _HUB_ID.fullmatch(spec)
    if match is None:
        raise UserError(f"{spec!r} is not a Hugging Face id; write it as org/name or org/name@revision")
    try:
        import huggingface_hub as hf
        from huggingface_hub import errors
    except ImportError as e:
        raise UserError(f"--model {spec} names a Hugging Face repository, which needs huggingface_hub: "
                        "pip install huggingface_hub") from e
    repo, revision = match["repo"], match["revision"]
    try:
        folder = Path(hf.snapshot_download(repo, revision=revision, allow_patterns=[*_CONFIGS, "*.safetensors"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(hf.snapshot_download(repo, revision=revision,
                                               allow_patterns=[*_CONFIGS, "pytorch_model*.bin"]))
    except errors.GatedRepoError as e:
        raise UserError(f"{repo} is gated: accept its licence on https://huggingface.co/{repo} and log in "
                        "(huggingface-cli login or HF_TOKEN), then rerun") from e
    except errors.RevisionNotFoundError as e:
        raise UserError(f"{repo} has no revision {revision!r}; pass a branch, tag or commit that exists") from e
    except errors.RepositoryNotFoundError as e:
        raise UserError(f"no Hugging Face repository {repo} (or it is private: log in with huggingface-cli login); "
                        "check the name, or pass a local checkpoint's path") from e
    except errors.LocalEntryNotFoundError as e:
        raise UserError(f"{spec} is not in the Hugging Face cache and the hub cannot be reached (HF_HUB_OFFLINE "
                        "is set or there is no network); download it once with network access") from e
    except (errors.HfHubHTTPError, OSError) as e:
        raise UserError(f"cannot fetch {spec} from the Hugging Face hub: {str(e).splitlines()[0]}") from e
    # The cache names each snapshot folder after its commit hash.
    return folder, folder.name
