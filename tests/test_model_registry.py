"""Model registry and weight lookup: names, overrides, and the message when weights are missing."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.models import loading
from harness.models.registry import ADAPTERS, REGISTRY, adapter_loader, get_entry


def test_every_entry_names_a_known_adapter_and_template():
    from harness.models.chat import TEMPLATES

    for entry in REGISTRY.values():
        assert entry.adapter in ADAPTERS, entry.name
        assert entry.template is None or entry.template in TEMPLATES, entry.name
    for name in ("toy-llava", "llava-1.5-7b", "vila-7b", "qwen2-vl-2b", "video-llava-7b"):
        assert name in REGISTRY


def test_unknown_model_lists_known_names():
    with pytest.raises(HarnessError, match="unknown model.*llava-1.5-7b"):
        get_entry("llava-9000")
    with pytest.raises(HarnessError, match="--adapter nope"):
        adapter_loader("nope")


def test_missing_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    entry = get_entry("llava-1.5-7b")
    with pytest.raises(HarnessError) as info:
        loading.resolve_weights(entry)
    text = str(info.value)
    assert "llava-hf/llava-1.5-7b-hf" in text
    assert "Hugging Face cache" in text
    assert "HF_HUB_OFFLINE is set" in text  # nothing was downloaded
    assert "huggingface-cli download llava-hf/llava-1.5-7b-hf" in text
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())


def test_model_path_overrides_and_must_exist(tmp_path):
    entry = get_entry("llava-1.5-7b")
    assert loading.resolve_weights(entry, tmp_path) == tmp_path
    with pytest.raises(HarnessError, match="--model-path .*no such folder"):
        loading.resolve_weights(entry, tmp_path / "missing")


def test_local_source_folder_is_used(tmp_path):
    from dataclasses import replace

    entry = replace(get_entry("vila-7b"), source=str(tmp_path))
    assert loading.resolve_weights(entry) == tmp_path


def test_builtin_weights_resolve_to_the_package_folder():
    entry = get_entry("toy-llava")
    path = loading.resolve_weights(entry)
    assert (path / "config.json").is_file()
    assert path.parent == loading.WEIGHTS_DIR


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    import shutil

    from harness.cli import main

    folder = tmp_path / "broken"
    shutil.copytree(loading.WEIGHTS_DIR / "toy-llava", folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)  # truncated download
    with pytest.raises(HarnessError, match="cannot load .*broken.* llava adapter"):
        loading.load_model("toy-llava", model_path=folder, device="cpu")
    db = tmp_path / "r.db"
    argv = ["run", "--model", "toy-llava", "--model-path", str(folder), "--tasks", "gqa-toy"]
    assert main([*argv, "--db", str(db)]) == 2
    assert not db.exists()  # nothing was written: the model loads before the run is created
