"""Whether the Hugging Face Hub can be reached, decided once and fast.

Offline, ``from_pretrained`` and ``datasets.load_dataset`` retry with backoff for up to a
minute before they fail. A name that is neither local nor cached is refused at once when
the Hub's host does not answer (or the ``HF_*_OFFLINE`` variables say offline).
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline_by_env() -> bool:
    """True when one of the Hugging Face offline variables is set to a true value."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS)


@functools.lru_cache(maxsize=None)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub's host (``HF_ENDPOINT``) opens within ``timeout`` seconds.

    Behind a proxy the host cannot be probed directly; the libraries are left to try.
    """
    if offline_by_env():
        return False
    if any(os.environ.get(v) for v in PROXY_VARS):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def model_cached(repo_id: str) -> bool:
    """Whether the Hub cache holds ``repo_id``'s config.json (so it loads offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
        return False


def dataset_cached(name: str) -> bool:
    """Whether the ``datasets`` cache (or the Hub cache) holds dataset ``name``."""
    import datasets
    from huggingface_hub import constants

    folder = name.replace("/", "___")
    hub_folder = "datasets--" + name.replace("/", "--")
    return (Path(datasets.config.HF_DATASETS_CACHE) / folder).exists() or (Path(constants.HF_HUB_CACHE) / hub_folder).exists()
