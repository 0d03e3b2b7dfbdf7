"""The llm-reasoners side of ``benchmarks/peer_llm_reasoners.py``.

Runs in the peer's own venv (``.venv-peer``, see ``benchmarks/setup_peer.sh``), never in
ours: ``python _peer_reasoners_side.py JOB.json OUT.json``. It imports nothing from this
project except the answer extractor ``envs/math/answers.py`` (stdlib only, loaded by file
path) so that "is this step a final answer?" means the same on both sides.

The search is written the way llm-reasoners' RAP / GSM8K examples are: a ``WorldModel``
whose state is the list of steps so far, a ``SearchConfig`` whose actions are sampled next
lines (``n_action`` per ``get_actions`` call, newline as EOS) and whose ``fast_reward`` is
the model's self-evaluation p("Yes") read from next-token logits (``reward`` reuses it),
searched by ``reasoners.algorithm.MCTS`` with an ``MCTSAggregation`` vote over answers.
The model is llm-reasoners' own ``HFModel``, loaded from the local HF directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

State = tuple[str, ...]


@dataclass
class Meter:
    """Where the peer's time and tokens went."""

    generate_seconds: float = 0.0
    eval_seconds: float = 0.0
    generate_calls: int = 0
    eval_calls: int = 0
    generated_tokens: int = 0
    samples: int = 0


def load_answers(path: str) -> ModuleType:
    """Our answer extractor, loaded by file path (it needs only the standard library)."""
    spec = importlib.util.spec_from_file_location("peer_answers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> None:
    job_path, out_path = argv
    job = json.loads(open(job_path, encoding="utf-8").read())
    torch.set_num_threads(job["threads"])
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    from reasoners import Reasoner, SearchConfig, WorldModel
    from reasoners.algorithm import MCTS, MCTSAggregation
    from reasoners.lm.hf_model import HFModel

    answers = load_answers(job["answers_py"])

    def final_answer(step: str) -> str | None:
        return answers.extract_number(answers.find_final(step))

    class StepWorldModel(WorldModel):
        """State = the steps so far; a step is one line; a step with an answer ends the episode."""

        def init_state(self) -> State:
            return ()

        def step(self, state: State, action: str) -> tuple[State, dict]:
            return state + (action,), {}

        def is_terminal(self, state: State) -> bool:
            return bool(state) and final_answer(state[-1]) is not None

    class SelfEvalSearch(SearchConfig):
        """Actions: ``n_action`` sampled next lines. Reward: self-evaluated p("Yes")."""

        def __init__(self, lm: HFModel, meter: Meter) -> None:
            super().__init__()
            self.lm, self.meter = lm, meter

        def get_actions(self, state: State) -> list[str]:
            prompt = self.example["prompt"] + "".join(s + "\n" for s in state)
            t0 = time.perf_counter()
            # hide_input=False: HFModel's hide_input slices the decoded text by the prompt's
            # length, which is wrong for chat prompts (their special tokens are not decoded).
            out = self.lm.generate([prompt], num_return_sequences=job["n_action"], do_sample=True,
                                   temperature=job["temperature"], top_p=job["top_p"], top_k=0,
                                   max_new_tokens=job["max_step_tokens"], eos_token_id=["\n", "\n\n"],
                                   hide_input=False)
            self.meter.generate_seconds += time.perf_counter() - t0
            self.meter.generate_calls += 1
            shown = self.lm.tokenizer.decode(self.lm.tokenizer(prompt).input_ids, skip_special_tokens=True)
            steps = []
            for text in out.text:
                new = text[len(shown):] if text.startswith(shown) else text
                self.meter.generated_tokens += len(self.lm.tokenizer.encode(new, add_special_tokens=False)) + 1
                self.meter.samples += 1
                steps.append(new.split("\n")[0].strip())
            return list(dict.fromkeys(s for s in steps if s))  # distinct, non-empty

        def fast_reward(self, state: State, action: str) -> tuple[float, dict]:
            p_yes = self.self_eval(state + (action,))
            return p_yes, {"self_eval": p_yes}

        def reward(self, state: State, action: str, self_eval: float | None = None, **_: Any) -> tuple[float, dict]:
            if self_eval is None:
                self_eval = self.self_eval(state + (action,))
            return self_eval, {"self_eval": self_eval}

        def self_eval(self, steps: State) -> float:
            numbered = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
            prompt = self.example["eval_prefix"] + numbered + self.example["eval_suffix"]
            t0 = time.perf_counter()
            yes, no = self.lm.get_next_token_logits(prompt, ["Yes", "No"])[0]
            self.meter.eval_seconds += time.perf_counter() - t0
            self.meter.eval_calls += 1
            return float(1.0 / (1.0 + np.exp(float(no) - float(yes))))

    def retrieve(state: State | None) -> str | None:
        return final_answer(state[-1]) if state else None

    t0 = time.perf_counter()
    lm = HFModel(job["model"], job["model"], device="cpu", max_batch_size=job["n_action"],
                 max_new_tokens=job["max_step_tokens"])
    assert lm.model.dtype == torch.float32, lm.model.dtype
    load_seconds = time.perf_counter() - t0
    lm.generate(["Warm up."], max_new_tokens=2)
    lm.get_next_token_logits("Warm up.", ["Yes", "No"])

    meter = Meter()
    rows = []
    wall0, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    for i, problem in enumerate(job["problems"]):
        torch.manual_seed(job["seed"] + i)
        np.random.seed(job["seed"] + i)
        algo = MCTS(n_iters=job["n_iters"], depth_limit=job["depth_limit"], w_exp=job["w_exp"],
                    cum_reward=np.mean, calc_q=np.mean, disable_tqdm=True,
                    aggregator=MCTSAggregation(retrieve, weight_policy="edge"))
        reasoner = Reasoner(StepWorldModel(), SelfEvalSearch(lm, meter), algo)
        p0, tokens0 = time.perf_counter(), meter.generated_tokens
        result = reasoner(problem)
        answer = result.aggregated_result if result.aggregated_result is not None else retrieve(result.terminal_state)
        rows.append({"id": problem["id"], "answer": answer, "seconds": round(time.perf_counter() - p0, 3),
                     "generated_tokens": meter.generated_tokens - tokens0, "nodes": _count(result.tree_state)})
        print(f"[peer] {i + 1}/{len(job['problems'])} {problem['id']}: answer={answer!r} "
              f"{rows[-1]['seconds']:.1f}s", file=sys.stderr, flush=True)
    out = {"load_seconds": round(load_seconds, 3), "wall_seconds": round(time.perf_counter() - wall0, 3),
           "cpu_seconds": round(time.process_time() - cpu0, 3), "meter": asdict(meter), "rows": rows,
           "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "versions": _versions()}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


def _count(node: Any) -> int:
    """Nodes of an llm-reasoners MCTS tree (children never expanded are counted too)."""
    return 1 + sum(_count(c) for c in (node.children or []))


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import transformers

    return {"llm-reasoners": version("llm-reasoners"), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0]}


if __name__ == "__main__":
    main(sys.argv[1:])
