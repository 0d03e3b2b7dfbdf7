"""Hand-built search trees with known Q, visits and outcomes, for the training tests.

golden_tree("t1"), question "What is 2+3?" (q = value_sum / visits, exact in binary):

    0 root
    |-- 1 "Add 2 and 3."        visits 4  q 0.75   value 0.5
    |   |-- 4 "2+3=5. The answer is 5"  visits 2  q 1.0  value 0.9  terminal, reward 1 (correct)
    |   `-- 5 "2+3=6. The answer is 6"  visits 2  q 0.0  value 0.4  terminal, reward 0
    |-- 2 "Multiply 2 by 3."    visits 4  q 0.25   value 0.3
    |   `-- 6 "2*3=6. The answer is 6"  visits 4  q 0.25 value 0.6  terminal, reward 0
    `-- 3 "Subtract 3 from 2."  visits 2  q 0.5    value 0.2  (unexpanded: no outcome below)

The selected answer is node 4.
"""

from __future__ import annotations

from mcts_agent.tree import Tree

QUESTION = "What is 2+3?"


def golden_tree(tree_id: str = "t1", question: str = QUESTION) -> Tree:
    t = Tree(tree_id=tree_id, task_id=f"task-{tree_id}", question=question, algo="mcts", meta={"reward_mode": "outcome"})
    t.root.visits, t.root.value_sum = 12, 5.0
    t.add_child(0, action="Add 2 and 3.", visits=4, value_sum=3.0, value=0.5)
    t.add_child(0, action="Multiply 2 by 3.", visits=4, value_sum=1.0, value=0.3)
    t.add_child(0, action="Subtract 3 from 2.", visits=2, value_sum=1.0, value=0.2)
    t.add_child(1, action="2+3=5. The answer is 5", visits=2, value_sum=2.0, value=0.9, terminal=True, reward=1.0, answer="5")
    t.add_child(1, action="2+3=6. The answer is 6", visits=2, value_sum=0.0, value=0.4, terminal=True, reward=0.0, answer="6")
    t.add_child(2, action="2*3=6. The answer is 6", visits=4, value_sum=1.0, value=0.6, terminal=True, reward=0.0, answer="6")
    t.answer, t.answer_node = "5", 4
    return t


def arithmetic_tree(tree_id: str, a: int, b: int) -> Tree:
    """A two-level tree for a + b whose right first step has Q 1 and wrong one Q 0."""
    t = Tree(tree_id=tree_id, task_id=f"task-{tree_id}", question=f"What is {a} + {b}?", meta={"reward_mode": "outcome"})
    t.root.visits, t.root.value_sum = 4, 2.0
    t.add_child(0, action=f"{a} + {b} = {a + b}. The answer is {a + b}", visits=2, value_sum=2.0, terminal=True,
                reward=1.0, answer=str(a + b))
    t.add_child(0, action=f"{a} + {b} = {a + b + 7}. The answer is {a + b + 7}", visits=2, value_sum=0.0, terminal=True,
                reward=0.0, answer=str(a + b + 7))
    return t


def embedded_model_dir() -> str:
    """The HF-format directory of the embedded SmolLM2-135M-Instruct (prepared once, in the cache)."""
    from mcts_agent.llm.model_store import resolve_model

    return resolve_model()
