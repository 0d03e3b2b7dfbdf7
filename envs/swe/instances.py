"""SWE-bench-format task instances: read, validated, and tied to a local git checkout.

An instance is one JSON object with SWE-bench's fields (``instance_id``, ``repo``,
``base_commit``, ``problem_statement``, ``patch``, ``test_patch``, ``FAIL_TO_PASS``,
``PASS_TO_PASS``; ``version``, ``hints_text``, ``created_at`` ... are kept when present).
``FAIL_TO_PASS`` / ``PASS_TO_PASS`` may be lists or JSON-encoded lists, as SWE-bench ships
them. Files are ``.json`` (a list), ``.jsonl`` (one object per line), or a ``datasets`` id.

The repository is a local git checkout: ``repo_path`` in the instance, or ``repos_dir``
holding one folder per repo, named as SWE-bench names its repos with ``/`` -> ``__``
(``pydata/xarray`` -> ``repos_dir/pydata__xarray``) or by the repo's last part.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mcts_agent.errors import EnvError

REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement", "patch", "test_patch",
            "FAIL_TO_PASS", "PASS_TO_PASS")


@dataclass(frozen=True)
class SWEInstance:
    """One SWE-bench task. ``patch`` is the gold fix, ``test_patch`` and the test lists are hidden grading."""

    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str
    test_patch: str
    FAIL_TO_PASS: tuple[str, ...]
    PASS_TO_PASS: tuple[str, ...]
    repo_path: str | None = None  # the local checkout (resolved by load_instances)
    extra: Mapping[str, Any] = field(default_factory=dict)  # every other field, as given

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in REQUIRED}
        out["FAIL_TO_PASS"], out["PASS_TO_PASS"] = list(self.FAIL_TO_PASS), list(self.PASS_TO_PASS)
        if self.repo_path is not None:
            out["repo_path"] = self.repo_path
        return {**out, **dict(self.extra)}


def _test_list(value: Any, name: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise EnvError(f"{where}: {name} must be a list of test ids (or its JSON text), got {value[:80]!r}") from None
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise EnvError(f"{where}: {name} must be a list of non-empty test id strings, got {value!r:.120}")
    return tuple(value)


def from_record(record: Mapping[str, Any], where: str = "instance") -> SWEInstance:
    """An instance from one SWE-bench-format record; names the missing or malformed field."""
    if not isinstance(record, Mapping):
        raise EnvError(f"{where}: an instance must be a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise EnvError(f"{where}: missing field(s) {missing}; SWE-bench instances need {list(REQUIRED)}")
    where = f"{where} ({record['instance_id']!r})"
    for k in ("instance_id", "repo", "base_commit", "problem_statement", "patch"):
        if not isinstance(record[k], str) or not record[k].strip():
            raise EnvError(f"{where}: {k} must be a non-empty string, got {record[k]!r:.80}")
    if not isinstance(record["test_patch"], str):
        raise EnvError(f"{where}: test_patch must be a string (a diff, or empty), got {record['test_patch']!r:.80}")
    f2p = _test_list(record["FAIL_TO_PASS"], "FAIL_TO_PASS", where)
    if not f2p:
        raise EnvError(f"{where}: FAIL_TO_PASS is empty; an instance needs at least one test its fix makes pass")
    p2p = _test_list(record["PASS_TO_PASS"], "PASS_TO_PASS", where)
    repo_path = record.get("repo_path")
    extra = {k: v for k, v in record.items() if k not in REQUIRED and k != "repo_path"}
    return SWEInstance(record["instance_id"], record["repo"], record["base_commit"], record["problem_statement"],
                       record["patch"], record["test_patch"], f2p, p2p, repo_path, extra)


def read_records(source: str | os.PathLike[str], split: str = "test") -> list[tuple[str, Any]]:
    """``(where, record)`` pairs from a .json / .jsonl file, a folder with ``{split}.jsonl``, or a ``datasets`` id."""
    from mcts_agent.envs.loading import read_records as read

    return [(f"{os.fspath(source)} record {i + 1}", r) for i, r in enumerate(read(source, split))]


def repo_dir(instance: SWEInstance, repos_dir: str | os.PathLike[str] | None) -> str:
    """The local checkout of ``instance``'s repository (see the module doc)."""
    if instance.repo_path:
        candidates = [Path(instance.repo_path)]
    elif repos_dir is not None:
        candidates = [Path(repos_dir) / instance.repo.replace("/", "__"), Path(repos_dir) / instance.repo.split("/")[-1]]
    else:
        raise EnvError(f"instance {instance.instance_id!r}: no repo_path and no repos_dir; give the folder that holds "
                       f"a git checkout of {instance.repo!r} (repos_dir=, or MCTS_AGENT_SWE_REPOS for the CLI)")
    for c in candidates:
        if (c / ".git").exists():
            return str(c.resolve())
    raise EnvError(f"instance {instance.instance_id!r}: no git checkout of {instance.repo!r} at "
                   f"{' or '.join(str(c) for c in candidates)}")


def check_commit(instance: SWEInstance, repo: str) -> None:
    """Raise unless ``instance.base_commit`` exists in ``repo``."""
    ok = subprocess.run(["git", "-C", repo, "cat-file", "-e", f"{instance.base_commit}^{{commit}}"],
                        capture_output=True).returncode == 0
    if not ok:
        raise EnvError(f"instance {instance.instance_id!r}: base_commit {instance.base_commit!r} does not exist in "
                       f"{repo} (fetch it, or point repos_dir at the right checkout)")


def check_applies(instance: SWEInstance, repo: str) -> None:
    """Raise unless the gold patch, then the test patch, apply cleanly at the base commit (checked
    on a temporary index: the checkout is not touched)."""
    with tempfile.TemporaryDirectory(prefix="mcts-swe-index-") as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": os.path.join(tmp, "index")}
        subprocess.run(["git", "-C", repo, "read-tree", instance.base_commit], env=env, check=True, capture_output=True)
        for what, patch in (("patch", instance.patch), ("test_patch", instance.test_patch)):
            if not patch.strip():
                continue
            text = patch if patch.endswith("\n") else patch + "\n"
            proc = subprocess.run(["git", "-C", repo, "apply", "--cached", "-"], input=text, text=True, env=env,
                                  capture_output=True)
            if proc.returncode != 0:
                raise EnvError(f"instance {instance.instance_id!r}: its {what} does not apply at base_commit "
                               f"{instance.base_commit[:12]}: {proc.stderr.strip()[:300]}")


def load_instances(source: str | os.PathLike[str] | Iterable[Mapping[str, Any]], *,
                   repos_dir: str | os.PathLike[str] | None = None, split: str = "test",
                   check: bool = True) -> list[SWEInstance]:
    """Instances from a file, a ``datasets`` id or records, each tied to its checkout (``check``: the
    checkout and base commit must exist and both patches apply there). Duplicate ids are an error."""
    if isinstance(source, (str, os.PathLike)):
        pairs = read_records(source, split)
        base = Path(source).parent if Path(source).is_file() else Path(source) if Path(source).is_dir() else None
    else:
        pairs = [(f"instance {i}", r) for i, r in enumerate(source)]
        base = None
    out: list[SWEInstance] = []
    seen: set[str] = set()
    for where, record in pairs:
        inst = from_record(record, where)
        if inst.instance_id in seen:
            raise EnvError(f"{where}: duplicate instance_id {inst.instance_id!r}")
        seen.add(inst.instance_id)
        if inst.repo_path and base is not None and not os.path.isabs(inst.repo_path):
            inst = replace(inst, repo_path=str(base / inst.repo_path))
        if check:
            repo = repo_dir(inst, repos_dir)
            check_commit(inst, repo)
            check_applies(inst, repo)
            inst = replace(inst, repo_path=repo)
        out.append(inst)
    return out


def write_instances(path: str | os.PathLike[str], instances: Sequence[SWEInstance]) -> None:
    """Write instances as JSONL (atomically), without local ``repo_path``s."""
    from mcts_agent.io import atomic_write_text

    lines = []
    for inst in instances:
        d = inst.to_dict()
        d.pop("repo_path", None)
        lines.append(json.dumps(d, sort_keys=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
