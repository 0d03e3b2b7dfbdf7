"""One installed namespace: envs/, critics/, training/, benchmarks/ install as mcts_agent.*; the core imports none of them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from mcts_agent import envs
from mcts_agent.env import SEARCH_ENV_ATTRS, SearchEnv

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOP = {"mcts_agent": "mcts_agent", "envs": "mcts_agent.envs", "critics": "mcts_agent.critics",
       "training": "mcts_agent.training", "benchmarks": "mcts_agent.benchmarks"}
# The composition layer may wire implementations together; the search core may not.
CORE_EXEMPT = ("mcts_agent/cli/",)


def package_folders() -> set[str]:
    out = set()
    for folder, name in TOP.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            out.add(".".join([name, *rel.parts]))
    return out


def test_every_package_folder_is_listed_and_mapped() -> None:
    tool = PYPROJECT["tool"]["setuptools"]
    assert set(tool["packages"]) == package_folders()
    assert tool["package-dir"] == {name: folder for folder, name in TOP.items()}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_core_imports_no_implementation() -> None:
    bad = []
    for path in sorted((ROOT / "mcts_agent").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(CORE_EXEMPT):
            continue
        for mod in imported_modules(path):
            if mod.split(".")[:2] in (["mcts_agent", "envs"], ["mcts_agent", "critics"],
                                      ["mcts_agent", "training"], ["mcts_agent", "benchmarks"]) or \
                    mod.split(".")[0] in ("envs", "critics", "training", "benchmarks"):
                bad.append(f"{rel} imports {mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", envs.list_envs())
def test_every_registered_env_implements_the_core_protocol(name: str) -> None:
    cls = envs.registry._load(envs.get_entry(name).entry_point, name)
    missing = [a for a in SEARCH_ENV_ATTRS if not hasattr(cls, a) and a != "reward_mode"]  # set per instance
    assert not missing, f"{name}: {missing}"
    assert issubclass(cls, envs.TextEnv)  # hence a gymnasium.Env and a SearchEnv
    assert SearchEnv  # the protocol itself lives in the core


def test_the_wheel_installs_one_namespace(tmp_path: Path) -> None:
    """Build the wheel, install it into a bare folder, import it from outside the repository."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("mcts_agent-*.whl")
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"mcts_agent"}
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import mcts_agent, mcts_agent.envs, mcts_agent.critics, mcts_agent.training, mcts_agent.benchmarks.common;"
            "from mcts_agent.envs import make; env = make('demo/counter', n=1);"
            "import importlib.util as u; assert all(u.find_spec(m) is None for m in ('envs', 'critics', 'training', 'benchmarks'));"
            "print(mcts_agent.envs.__file__)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith(str(target))
