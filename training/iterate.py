"""Iterative MCTS-DPO: search the train split, extract step pairs, train, evaluate, repeat.

Each iteration k writes ``out_dir/iter_<k>/`` with one folder per phase:

    search/   trees.jsonl, results.jsonl, summary.json   (MCTS with the policy of iteration k-1)
    pairs/    the training dataset (datasets.save_to_disk) and stats.json: step preference
              pairs (method dpo) or correct solution paths (method sft, the STaR baseline)
    critic/   with critic_train set: critic/ (the trained critic of iteration k), train_result.json
              (losses, label statistics, held-out AUC beside the search critics' own)
    train/    adapter/, merged/ (the policy of iteration k), train_result.json; with an OpenAI-compatible
              policy backend also served_adapter/ (policy k as one LoRA adapter on the base model)
    eval/     <algo>/ runs on the held-out split with the new policy
    monitors.json

``iter_0/eval`` evaluates the initial policy. A phase is finished once its ``DONE.json``
exists (written atomically, last). A killed run resumes at the first unfinished phase,
which it redoes from scratch, so it ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mcts_agent.errors import ConfigError, TrainingDataError
from mcts_agent.io import atomic_write_json
from mcts_agent.training.iterate_config import IterateConfig

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


class IterateRun:
    """One iterate run on disk; ``run()`` does (or resumes) all of it."""

    def __init__(self, config: IterateConfig, progress: Progress | None = None) -> None:
        self.cfg = config
        self.root = Path(config.out_dir)
        self.progress = progress or (lambda msg: log.info(msg))
        self._tasks: dict[str, list] = {}

    # ----- bookkeeping ----------------------------------------------------------------
    def _check_config(self) -> None:
        """Refuse to resume a run directory made with a different configuration."""
        path = self.root / "config.json"
        mine = self.cfg.to_dict()
        if path.exists():
            theirs = json.loads(path.read_text())
            if _decisive(theirs) != _decisive(mine):  # a resumed run may move to another cluster or executor
                mine, theirs = _decisive(mine), _decisive(theirs)
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise ConfigError(f"{self.root} holds a run with a different configuration (differs in {diff}); "
                                  "choose another out_dir or restore the original config")
        else:
            atomic_write_json(path, mine)

    def phase(self, k: int, name: str, work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work(folder)`` unless the phase is already DONE; return its record."""
        folder = self.root / f"iter_{k}" / name
        done = folder / "DONE.json"
        if done.exists():
            return json.loads(done.read_text())
        if folder.exists():  # a phase cut short: redo it whole, deterministically
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        self.progress(f"iteration {k}: {name}")
        t0 = time.perf_counter()
        record = work(folder)
        record["seconds"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(done, record)
        return record

    def tasks(self, which: str) -> list:
        from mcts_agent import envs

        if which not in self._tasks:
            c = self.cfg
            if which == "train":
                self._tasks[which] = envs.load_tasks(c.env, path=c.train_data, split=c.train_split,
                                                     limit=c.train_tasks, seed=c.train_seed)
            else:
                self._tasks[which] = envs.load_tasks(c.env, path=c.eval_data, split=c.eval_split,
                                                     limit=c.eval_tasks, seed=c.eval_seed)
        return self._tasks[which]

    # ----- phases ---------------------------------------------------------------------
    def search(self, k: int, folder: Path) -> dict[str, Any]:
        from mcts_agent import envs
        from mcts_agent.critics import make_critic
        from mcts_agent.runner import run_tasks

        env = envs.make(self.cfg.env, max_steps=self.cfg.max_steps, reward_mode="outcome")
        with self._backends("backend", k - 1) as (backend, critic_backend):
            critic = make_critic(self.cfg.resolve_critic(self.cfg.critic, self.trained_critic(k - 1)), critic_backend, env)
            s = run_tasks(self.tasks("train"), env, backend, self.cfg.search_config(), folder, critic, env_id=self.cfg.env)
            tokens = backend.stats.generated_tokens
        return {"accuracy": s.accuracy, "tasks": s.tasks, "generated_tokens": tokens}

    @contextlib.contextmanager
    def _backends(self, name: str, k: int) -> Iterator[tuple[Any, Any]]:
        """(policy backend serving policy k, critic backend) for one phase; both are closed when it
        ends, so no engine, server connection, adapter or memory crosses into the next phase."""
        spec = self.cfg.backend_spec(name, self.policy(k))
        critic_spec = self.cfg.backend_spec("critic_backend")
        with contextlib.ExitStack() as stack:
            if spec.backend == "openai":
                backend = self._served_policy(spec, self.policy_iteration(k), stack)
            else:
                backend = stack.enter_context(spec.load(seed=self.cfg.seed))
            critic = stack.enter_context(critic_spec.load(seed=self.cfg.seed)) if critic_spec else backend
            yield backend, critic

    def _served_policy(self, spec: Any, i: int, stack: contextlib.ExitStack) -> Any:
        """An OpenAI-compatible server's base model (i = 0), or iteration i's policy handed to the
        server as one LoRA adapter on it (loaded now, unloaded when the phase ends)."""
        from dataclasses import replace

        from mcts_agent.llm.model_store import resolve_model

        # every iteration renders prompts with the policy's own chat template, not the server's name for it
        spec = replace(spec, options={"tokenizer": resolve_model(self.cfg.model), **spec.options})
        backend = stack.enter_context(spec.load())
        if i == 0:
            backend.use_base_model()
            return backend
        name = f"mcts-agent-{hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]}-iter{i}"
        t0 = time.perf_counter()
        backend.load_adapter(name, str(self.served_adapter(i).resolve()))
        stack.callback(backend.unload_adapter, name)
        self.progress(f"iteration {i}'s policy handed to {spec.base_url} as LoRA adapter {name} "
                      f"in {time.perf_counter() - t0:.2f}s")
        return backend

    def served_adapter(self, i: int) -> Path:
        """Iteration i's policy as one LoRA adapter on the base model (see lora_stack)."""
        return self.root / f"iter_{i}" / "train" / "served_adapter"

    def pairs(self, k: int, folder: Path) -> dict[str, Any]:
        from mcts_agent import envs
        from mcts_agent.io import load_trees
        from mcts_agent.training.common import recorded_prompt, save_dataset
        from mcts_agent.training.monitors import compute_monitors, write_monitors
        from mcts_agent.training.pairs import PairConfig, extract_pairs, pairs_to_dataset
        from mcts_agent.training.sft_data import rejection_sampling_sft

        trees = load_trees(self.root / f"iter_{k}" / "search" / "trees.jsonl")
        env = envs.make(self.cfg.env, max_steps=self.cfg.max_steps)
        # Turn-based envs: an action ends at the end of the turn, which the trainer appends (EOS).
        delimiter = "" if env.turn_based else env.step_delimiter
        cfg = PairConfig(**{"delimiter": delimiter, **self.cfg.pairs})
        prompt_fn = recorded_prompt(delimiter=cfg.delimiter)  # what the policy saw, read back from the trees
        stats: dict[str, Any] = {}
        try:
            if self.cfg.method == "dpo":
                ds = pairs_to_dataset(extract_pairs(trees, cfg, prompt_fn, stats=stats))
            elif self.cfg.method == "sft":
                ds = rejection_sampling_sft(trees, prompt_fn, delimiter=delimiter)
                stats = {"records": len(ds), "trees_with_a_correct_path": len(set(ds["tree_id"]))}
            else:
                ds, stats = revision_dataset(trees, prompt_fn, delimiter)
        except TrainingDataError as e:
            self.progress(f"iteration {k}: no training data ({e}); the policy is kept for this iteration")
            ds, stats = None, {**stats, "reason": str(e)}
        write_monitors(compute_monitors(trees), self.root / f"iter_{k}" / "monitors.json")
        available = len(ds) if ds is not None else 0
        if ds is not None:  # else nothing to learn from this iteration's trees: the policy stays as it is
            if self.cfg.max_examples is not None and available > self.cfg.max_examples:
                ds = ds.shuffle(seed=self.cfg.seed).select(range(self.cfg.max_examples))
            save_dataset(ds, folder / "dataset")
        stats.update(available=available, used=len(ds) if ds is not None else 0)
        atomic_write_json(folder / "stats.json", stats)
        return {"examples": stats["used"], "available": available, **({"reason": stats["reason"]} if ds is None else {})}

    def train(self, k: int, folder: Path) -> dict[str, Any]:
        import datasets

        from mcts_agent.training.dpo import DPOTrainConfig, train_dpo
        from mcts_agent.training.sft import SFTTrainConfig, train_sft

        data = self.root / f"iter_{k}" / "pairs" / "dataset"
        if not data.exists():
            return {"skipped": "no training examples in this iteration's trees", "merged_dir": None}
        ds = datasets.load_from_disk(str(data))
        if self.cfg.method == "dpo":
            from mcts_agent import envs

            turn_based = envs.make(self.cfg.env).turn_based  # an action ends the turn: keep TRL's EOS
            cfg = DPOTrainConfig(**{"seed": self.cfg.seed, "append_eos": turn_based, **self.cfg.dpo,
                                    "output_dir": str(folder)})
            result = train_dpo(self.policy(k - 1), ds, cfg)
        else:
            sft = SFTTrainConfig(**{"seed": self.cfg.seed, **self.cfg.sft, "output_dir": str(folder)})
            result = train_sft(self.policy(k - 1), ds, sft)
        if self.cfg.serves_adapters():
            from mcts_agent.llm.model_store import resolve_model
            from mcts_agent.training.lora_stack import stack_adapters

            before = self.policy_iteration(k - 1)
            chain = ([self.served_adapter(before)] if before else []) + [result.adapter_dir]
            stack_adapters(chain, self.served_adapter(k), base_model=resolve_model(self.cfg.model))
        return {"merged_dir": result.merged_dir, "initial_loss": result.initial_loss, "final_loss": result.final_loss,
                "steps": result.steps, "examples": result.examples}

    def critic(self, k: int, folder: Path) -> dict[str, Any]:
        """Train the critic on iteration k's search trees, continuing iteration k-1's critic
        (the self-evolving critic); its held-out AUC is reported beside the search critics'."""
        from mcts_agent.io import load_trees
        from mcts_agent.training.critic_train import train_critic

        trees = load_trees(self.root / f"iter_{k}" / "search" / "trees.jsonl")
        cfg = self.cfg.critic_train_config(str(folder))
        try:
            r = train_critic(self.trained_critic(k - 1) or self.cfg.model, trees, cfg)
        except TrainingDataError as e:
            self.progress(f"iteration {k}: no critic training data ({e}); the critic is kept for this iteration")
            return {"skipped": str(e), "critic_dir": None}
        return {"critic_dir": r.critic_dir, "kind": r.kind, "loss_before": r.loss_before, "loss_after": r.loss_after,
                "steps": r.steps, "examples": r.examples, "label_stats": r.label_stats, "val": r.val}

    def trained_critic(self, k: int) -> str | None:
        """The critic directory trained by iteration k or the latest before it (None: none yet)."""
        for i in range(k, 0, -1):
            done = self.root / f"iter_{i}" / "critic" / "DONE.json"
            if done.exists() and json.loads(done.read_text()).get("critic_dir"):
                return str(self.root / f"iter_{i}" / "critic" / "critic")
        return None

    def evaluate(self, k: int, folder: Path) -> dict[str, Any]:
        from mcts_agent import envs
        from mcts_agent.critics import make_critic
        from mcts_agent.runner import run_tasks

        env = envs.make(self.cfg.env, max_steps=self.cfg.max_steps, reward_mode="none")
        out: dict[str, Any] = {}
        with self._backends("eval_backend", k) as (backend, critic_backend):
            for algo in self.cfg.eval_algos:
                sc = self._where_search_runs(self.cfg.eval_config(algo))
                spec = self.cfg.resolve_critic(self.cfg.eval_critic, self.trained_critic(k))
                critic = make_critic(spec, critic_backend, env) if sc.algo.needs_critic else None
                s = run_tasks(self.tasks("eval"), env, backend, sc, folder / algo, critic, env_id=self.cfg.env)
                out[algo] = {"accuracy": s.accuracy, "ci95": list(s.ci95), "correct": s.correct, "tasks": s.tasks,
                             "tokens_per_task": s.tokens_per_task}
        return out

    def _where_search_runs(self, sc: Any) -> Any:
        """Held-out searches step their envs where the training search does (its Ray settings),
        unless eval_search names an executor of its own."""
        from dataclasses import replace

        train = self.cfg.search_config()
        if train.env_executor != "ray" or {"env_executor", "ray"} & set(self.cfg.eval_search):
            return sc
        keys = [k for k in ("env_executor", "ray", "ray_resources", "ray_retries", "env_workers")
                if k not in self.cfg.eval_search]
        return replace(sc, **{k: getattr(train, k) for k in keys})

    def policy_iteration(self, k: int) -> int:
        """The iteration whose training made the policy after iteration k (0: the initial model;
        an iteration with no data keeps the last one)."""
        done = self.root / f"iter_{k}" / "train" / "DONE.json"
        if k > 0 and done.exists() and json.loads(done.read_text()).get("skipped"):
            return self.policy_iteration(k - 1)
        return k

    def policy(self, k: int) -> str | None:
        """The policy after iteration k: the initial model or a trained iteration's merged/ folder."""
        i = self.policy_iteration(k)
        return self.cfg.model if i == 0 else str(self.root / f"iter_{i}" / "train" / "merged")

    # ----- the loop -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._check_config()
        train = self.cfg.search_config()
        if not self.cfg.uses_ray():
            return self._run()
        from mcts_agent.ray_executor import ray_session

        with ray_session(train.ray):  # one cluster connection for every phase
            return self._run()

    def _run(self) -> dict[str, Any]:
        history = [{"iteration": 0, "eval": self.phase(0, "eval", lambda f: self.evaluate(0, f))}]
        for k in range(1, self.cfg.iterations + 1):
            row: dict[str, Any] = {"iteration": k}
            row["search"] = self.phase(k, "search", lambda f, k=k: self.search(k, f))
            row["pairs"] = self.phase(k, "pairs", lambda f, k=k: self.pairs(k, f))
            if self.cfg.critic_train is not None:
                row["critic"] = self.phase(k, "critic", lambda f, k=k: self.critic(k, f))
            row["train"] = self.phase(k, "train", lambda f, k=k: self.train(k, f))
            row["eval"] = self.phase(k, "eval", lambda f, k=k: self.evaluate(k, f))
            history.append(row)
        result = {"config": self.cfg.to_dict(), "history": history}
        atomic_write_json(self.root / "result.json", result)
        self._plot(history)
        return result

    def _plot(self, history: list[dict[str, Any]]) -> None:
        from mcts_agent.training.monitors import plot_monitors

        monitors = []
        for k in range(1, len(history)):
            p = self.root / f"iter_{k}" / "monitors.json"
            if p.exists():
                monitors.append({"iteration": k, **json.loads(p.read_text())})
        if monitors:
            plot_monitors(monitors, self.root / "monitors.png")


def _decisive(config: dict[str, Any]) -> dict[str, Any]:
    """An iterate config less the search fields that change only speed (executor, workers, Ray cluster)."""
    from mcts_agent.search import SearchConfig

    out = dict(config)
    for key in ("search", "eval_search"):
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k not in SearchConfig.RUNTIME_FIELDS}
    return out


def revision_dataset(trees: list, prompt_fn: Any, delimiter: str) -> tuple[Any, dict[str, Any]]:
    """Agent-R's training set: revision trajectories (a failing path cut at its first bad turn and
    spliced to a better sibling) plus the correct paths themselves."""
    import datasets

    from mcts_agent.errors import TrainingDataError
    from mcts_agent.training.sft_data import RevisionConfig, rejection_sampling_sft, revision_trajectories

    parts, stats = [], {}
    for name, build in (("revisions", lambda: revision_trajectories(trees, RevisionConfig(delimiter=delimiter), prompt_fn)),
                        ("correct_paths", lambda: rejection_sampling_sft(trees, prompt_fn, delimiter=delimiter))):
        try:
            ds = build().select_columns(["prompt", "completion", "tree_id"])
        except TrainingDataError:
            ds = None
        stats[name] = len(ds) if ds is not None else 0
        if ds is not None:
            parts.append(ds)
    if not parts:
        raise TrainingDataError(f"no revision trajectory and no correct path in {len(trees)} trees: nothing to train on")
    return datasets.concatenate_datasets(parts), stats


def run_iterate(config: IterateConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) ``config``; return the per-iteration history."""
    return IterateRun(config, progress).run()
