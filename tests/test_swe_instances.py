"""SWE-bench-format instances: reading, clear errors on bad ones, deterministic checkouts of generated sets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mcts_agent import envs
from mcts_agent.envs.swe.instances import REQUIRED, from_record, load_instances
from mcts_agent.envs.swe.projects import SHIPPED, prepare_instances
from mcts_agent.errors import EnvError

PATCH = "diff --git a/mod.py b/mod.py\n--- a/mod.py\n+++ b/mod.py\n@@ -1 +1 @@\n-X = 1\n+X = 2\n"
TEST_PATCH = ("diff --git a/test_mod.py b/test_mod.py\nnew file mode 100644\n--- /dev/null\n+++ b/test_mod.py\n"
              "@@ -0,0 +1,3 @@\n+import mod\n+def test_x():\n+    assert mod.X == 2\n")


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    r = tmp_path / "repos" / "acme__widgets"
    r.mkdir(parents=True)
    (r / "mod.py").write_text("X = 1\n")
    git = ["git", "-C", str(r), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(r)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    return r, subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def record(commit: str, **changes: object) -> dict:
    base = {"instance_id": "acme__widgets-1", "repo": "acme/widgets", "base_commit": commit,
            "problem_statement": "X should be 2", "patch": PATCH, "test_patch": TEST_PATCH,
            "FAIL_TO_PASS": json.dumps(["test_mod.py::test_x"]), "PASS_TO_PASS": "[]", "version": "1.0"}
    return {**base, **changes}


def write(tmp_path: Path, *records: dict) -> Path:
    p = tmp_path / "instances.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return p


def test_a_swebench_record_loads_with_its_checkout(tmp_path: Path, repo: tuple[Path, str]) -> None:
    (inst,) = load_instances(write(tmp_path, record(repo[1])), repos_dir=tmp_path / "repos")
    assert inst.FAIL_TO_PASS == ("test_mod.py::test_x",) and inst.PASS_TO_PASS == ()  # JSON-text lists, as SWE-bench
    assert inst.repo_path == str(repo[0]) and inst.extra == {"version": "1.0"}
    (again,) = load_instances(tmp_path / "instances.jsonl", repos_dir=tmp_path / "repos")
    assert again == inst
    tasks = envs.load_tasks("swe/bench", tmp_path / "instances.jsonl", repos_dir=str(tmp_path / "repos"))
    assert tasks[0].id == "acme__widgets-1" and tasks[0].question == "X should be 2"


@pytest.mark.parametrize("changes, message", [
    ({"patch": None}, "patch must be a non-empty string"),
    ({"FAIL_TO_PASS": "not json"}, "FAIL_TO_PASS must be a list of test ids (or its JSON text)"),
    ({"FAIL_TO_PASS": []}, "FAIL_TO_PASS is empty"),
    ({"PASS_TO_PASS": [1]}, "PASS_TO_PASS must be a list of non-empty test id strings"),
])
def test_malformed_fields_are_named(changes: dict, message: str) -> None:
    with pytest.raises(EnvError, match="acme__widgets-1") as e:
        from_record(record("abc", **changes), "f.jsonl record 1")
    assert message in str(e.value) and str(e.value).startswith("f.jsonl record 1")


def test_a_missing_field_is_named(tmp_path: Path, repo: tuple[Path, str]) -> None:
    rec = record(repo[1])
    del rec["test_patch"]
    with pytest.raises(EnvError, match=r"record 1: missing field\(s\) \['test_patch'\]; SWE-bench instances need"):
        load_instances(write(tmp_path, rec), repos_dir=tmp_path / "repos")
    assert "test_patch" in REQUIRED


def test_a_base_commit_that_does_not_exist(tmp_path: Path, repo: tuple[Path, str]) -> None:
    with pytest.raises(EnvError, match="base_commit 'deadbeef' does not exist in"):
        load_instances(write(tmp_path, record("deadbeef")), repos_dir=tmp_path / "repos")


def test_a_patch_that_does_not_apply(tmp_path: Path, repo: tuple[Path, str]) -> None:
    bad = PATCH.replace("-X = 1", "-X = 7")
    with pytest.raises(EnvError, match="its patch does not apply at base_commit"):
        load_instances(write(tmp_path, record(repo[1], patch=bad)), repos_dir=tmp_path / "repos")
    with pytest.raises(EnvError, match="its test_patch does not apply"):
        load_instances(write(tmp_path, record(repo[1], test_patch=PATCH)), repos_dir=tmp_path / "repos")
    assert (repo[0] / "mod.py").read_text() == "X = 1\n"  # the checkout was only read


def test_no_checkout_and_duplicates(tmp_path: Path, repo: tuple[Path, str]) -> None:
    with pytest.raises(EnvError, match="no git checkout of 'acme/widgets' at"):
        load_instances(write(tmp_path, record(repo[1])), repos_dir=tmp_path)
    with pytest.raises(EnvError, match="duplicate instance_id 'acme__widgets-1'"):
        load_instances(write(tmp_path, record(repo[1]), record(repo[1])), repos_dir=tmp_path / "repos")
    with pytest.raises(EnvError, match="does not exist"):
        load_instances(tmp_path / "nope.jsonl")


def test_generated_instances_rebuild_to_the_same_commits(tmp_path: Path) -> None:
    """The shipped set names base commits that a fresh checkout from the sdist reproduces."""
    instances = load_instances(SHIPPED, check=False)
    assert len(instances) >= 10
    prepare_instances(instances, tmp_path / "repos")
    loaded = load_instances(SHIPPED, repos_dir=tmp_path / "repos")
    assert [i.base_commit for i in loaded] == [i.base_commit for i in instances]


def test_a_workspace_copy_that_cannot_be_made_frees_its_place(tmp_path: Path, repo: tuple[Path, str]) -> None:
    from mcts_agent.envs.swe.workspace import Workspace

    with Workspace(str(repo[0]), "deadbeef" * 5, capacity=1, root=str(tmp_path)) as ws:
        for _ in range(2):  # the second lease would wait forever if the failed copy kept its slot
            with pytest.raises(EnvError, match="git checkout -q --detach failed in .*reference is not a tree"):
                with ws.checkout(""):
                    pass
    with Workspace(str(repo[0]), repo[1], capacity=1, root=str(tmp_path)) as ws:
        with ws.checkout(PATCH) as copy:
            assert Path(copy, "mod.py").read_text() == "X = 2\n"
            ws.settle(copy, PATCH)
        with ws.checkout(PATCH) as copy:
            assert ws.stats.reused == 1 and ws.stats.restores == 1
        with pytest.raises(EnvError, match="does not apply"):
            with ws.checkout(PATCH.replace("X = 1", "X = 5")):
                pass
