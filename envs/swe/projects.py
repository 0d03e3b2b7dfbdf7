"""Real Python projects as local git repositories, rebuilt the same everywhere from their PyPI sdists.

``prepare_project("cachetools==8.0.2", repos_dir)`` downloads the sdist (its tests ship in
it), unpacks it into ``repos_dir/cachetools`` and commits it with a fixed author, date and
message, so the commit id is the same on every machine. Generated instances put their base
commits on top of it (``commit_instance``), also deterministically: a shipped instance file
names commits that ``prepare_instances`` rebuilds from the instances' own patches.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mcts_agent.envs.swe.config import PROJECT_NAMES
from mcts_agent.envs.swe.instances import SWEInstance
from mcts_agent.envs.swe.testrun import DEFAULT_PYTEST, default_cache
from mcts_agent.envs.swe.workspace import clone_at, git
from mcts_agent.errors import EnvError

FIXED_DATE = "2000-01-01T00:00:00+0000"
SHIPPED = Path(__file__).with_name("data") / "cachetools.jsonl"  # a small generated set, for tests and demos
_EXCLUDE = "*.egg-info/\n__pycache__/\n*.pyc\n.pytest_cache/\n"


@dataclass(frozen=True)
class Project:
    """A project whose sdist holds its tests: where they are and what they need."""

    requirement: str  # pip specifier of the sdist, pinned
    tests: str  # test folder inside the sdist
    source: str  # the package's source folder (where bugs go)
    test_requirements: tuple[str, ...] = (DEFAULT_PYTEST,)

    @property
    def name(self) -> str:
        return self.requirement.split("==")[0]


# Tried here: green under plain pytest in the sandbox in about a second.
PROJECTS = {
    "cachetools": Project("cachetools==8.0.2", "tests", "src/cachetools"),
    "toolz": Project("toolz==1.2.0", "toolz/tests", "toolz"),
}


assert tuple(PROJECTS) == PROJECT_NAMES, "keep envs.swe.config.PROJECT_NAMES in step with PROJECTS"


def project(name: str) -> Project:
    if name not in PROJECTS:
        raise EnvError(f"unknown project {name!r}; known projects: {sorted(PROJECTS)}")
    return PROJECTS[name]


def _commit(repo: str, message: str) -> str:
    env = {"GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    subprocess.run(["git", "-C", repo, "add", "-A"], check=True, capture_output=True)
    proc = subprocess.run(["git", "-C", repo, "-c", "user.name=mcts-agent", "-c", "user.email=mcts-agent@localhost",
                           "-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "-m", message],
                          capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode != 0:
        raise EnvError(f"git commit failed in {repo}: {proc.stderr.strip()[:300]}")
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def fetch_sdist(requirement: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The sdist of ``requirement`` (downloaded from the package index once, then cached)."""
    dest = Path(cache_dir) if cache_dir else default_cache() / "sdists"
    name, _, version = requirement.partition("==")
    found = sorted(dest.glob(f"{name}-{version}.tar.gz")) if version else []
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                           "--disable-pip-version-check", "-d", str(dest), requirement], capture_output=True, text=True)
    found = sorted(dest.glob(f"{name}-{version or '*'}.tar.gz"))
    if proc.returncode != 0 or not found:
        raise EnvError(f"cannot download the sdist of {requirement!r}: {proc.stderr.strip()[-400:]}")
    return found[-1]


def prepare_project(name: str, repos_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """``(repo path, clean commit)`` of project ``name`` under ``repos_dir`` (built once)."""
    proj = project(name)
    repo = Path(repos_dir) / proj.name
    message = f"{proj.requirement} from its sdist"
    if (repo / ".git").is_dir():
        head = git(str(repo), "rev-list", "--max-parents=0", "HEAD", check=False).stdout.split()
        if head and git(str(repo), "log", "-1", "--format=%s", head[0]).stdout.strip() == message:
            return str(repo), head[0]
        raise EnvError(f"{repo} exists but is not a checkout prepared from {proj.requirement}; remove it or pick "
                       f"another repos_dir")
    sdist = fetch_sdist(proj.requirement)
    Path(repos_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{proj.name}-", dir=repos_dir))
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (top,) = list(tmp.iterdir())
        subprocess.run(["git", "init", "-q", "-b", "main", str(top)], check=True, capture_output=True)
        (top / ".git" / "info" / "exclude").write_text(_EXCLUDE)
        commit = _commit(str(top), message)
        os.rename(top, repo)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.chmod(repos_dir, 0o755)
    return str(repo), commit


def commit_instance(repo: str, clean: str, instance: SWEInstance) -> str:
    """Create ``instance``'s base commit on ``clean``: the gold patch and the test patch undone."""
    tmp = tempfile.mkdtemp(prefix="mcts-swe-build-")
    try:
        clone_at(repo, clean, tmp)
        for what, patch in (("gold patch", instance.patch), ("test patch", instance.test_patch)):
            if patch.strip() and git(tmp, "apply", "-R", "-", stdin=patch, check=False).returncode != 0:
                raise EnvError(f"instance {instance.instance_id!r}: its {what} does not undo on {clean[:12]}")
        commit = _commit(tmp, f"{instance.instance_id}: bug injected, its tests removed")
        git(repo, "fetch", "-q", tmp, f"{commit}:refs/heads/swe/{instance.instance_id}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return commit


def prepare_instances(instances: list[SWEInstance], repos_dir: str | os.PathLike[str]) -> list[str]:
    """Rebuild the base commits of generated instances (``extra['project']`` names the project);
    raises if one comes out with another id than the instance names."""
    out = []
    for inst in instances:
        name = inst.extra.get("project") or inst.repo.split("/")[-1]
        repo, clean = prepare_project(name, repos_dir)
        if git(repo, "cat-file", "-e", f"{inst.base_commit}^{{commit}}", check=False).returncode != 0:
            got = commit_instance(repo, clean, inst)
            if got != inst.base_commit:
                raise EnvError(f"instance {inst.instance_id!r}: rebuilt base commit {got[:12]} is not the instance's "
                               f"{inst.base_commit[:12]} (a different sdist or git version?)")
        out.append(repo)
    return out


__all__ = ["PROJECTS", "Project", "SHIPPED", "commit_instance", "fetch_sdist", "prepare_instances",
           "prepare_project", "project"]
