"""``--teacher hf:ORG/REPO``: an rl-baselines3-zoo agent from the Hugging Face hub (``sb3/ppo-LunarLander-v2``).

The repo is fetched by ``huggingface_hub`` into its own cache (``HF_HOME``; with ``HF_HUB_OFFLINE=1`` only the
cache is read), and read as an rl-zoo folder in the layout rl-zoo's ``push_to_hub`` writes: ``<algo>-<Env>.zip``,
``config.yml``, ``args.yml``, ``env_kwargs.yml`` and, for a normalised agent, ``vec_normalize.pkl``, side by side.
Nothing in it runs: the zip, the YAML and the statistics go through the same safe readers as any folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from distillcli.errors import DistillError, short

# What a hub repo id looks like (huggingface_hub's own rules are a little looser): ORG/NAME, optionally @REVISION.
REPO = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<revision>[\w./-]{1,100}))?")
FILES = ["*.zip", "*.yml", "*.pkl"]  # the agent, its YAML and statistics; not its video or training logs
SKIP = ["train_eval_metrics.zip"]


def hub_folder(text: str) -> Path:
    """The local folder of ``ORG/REPO[@REVISION]`` in the hub cache, downloaded into it first where allowed."""
    match = REPO.fullmatch(text.strip())
    if match is None:
        raise DistillError(f"--teacher hf:{short(text, 80)}: expected hf:ORG/REPO, e.g. hf:sb3/ppo-LunarLander-v2")
    repo, revision = match.group("repo"), match.group("revision")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise DistillError("--teacher hf:... needs huggingface_hub: pip install 'distillcli[hub]'") from None
    try:
        folder = snapshot_download(repo, revision=revision, allow_patterns=FILES, ignore_patterns=SKIP)
    except LocalEntryNotFoundError:
        raise DistillError(
            f"hf:{repo} is not in the Hugging Face cache and cannot be downloaded now (offline, or HF_HUB_OFFLINE is "
            f"set); fetch it once with `huggingface-cli download {repo}`"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise DistillError(f"hf:{short(text, 120)}: no such repository (or revision) on the Hugging Face hub") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise DistillError(f"hf:{short(text, 120)}: cannot fetch it ({short(error, 160)})") from None
    path = Path(str(folder))
    if not (path / "args.yml").is_file():
        raise DistillError(f"hf:{repo} is not an rl-zoo agent (no args.yml beside its zip)")
    return path
