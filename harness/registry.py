"""Task registry: finds task and group YAML files, applies ``include:``, validates them.

Files live in the ``harness.tasks`` package (one folder per benchmark). A file
whose name starts with ``_`` is a template that other files include; it is
not a task by itself. Tags on tasks act as groups too.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.api.config import GroupConfig, TaskConfig
from harness.errors import TaskConfigError
from harness.hooks import TaskYamlLoader


def _tasks_dir() -> Path:
    """The folder of the ``harness.tasks`` package, found without importing it (its modules
    import the registry)."""
    spec = importlib.util.find_spec("harness.tasks")
    if spec is None or spec.origin is None:  # pragma: no cover - a broken install
        raise TaskConfigError("the harness.tasks package is not installed")
    return Path(spec.origin).resolve().parent


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse one YAML file with the safe task loader; errors name file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=TaskYamlLoader)  # noqa: S506 - safe loader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        loc = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise TaskConfigError(f"{loc}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise TaskConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TaskConfigError(f"{path}: expected a mapping of fields at the top level")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_with_includes(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML file and merge the files it ``include:``s (child keys win)."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise TaskConfigError(f"{path}: include cycle: {chain}")
    data = read_yaml(path)
    include = data.pop("include", None)
    if include is None:
        return data
    names = [include] if isinstance(include, str) else include
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TaskConfigError(f"{path}: field 'include': expected a file name or a list of them")
    merged: dict[str, Any] = {}
    for name in names:
        target = (path.parent / name).resolve()
        if not target.is_relative_to(_tasks_dir()) and not target.is_relative_to(path.parent):
            raise TaskConfigError(f"{path}: field 'include': {name!r} is outside the tasks folder")
        if not target.exists():
            raise TaskConfigError(f"{path}: field 'include': {name!r} not found next to it")
        merged = _merge(merged, load_with_includes(target, (*_seen, path)))
    return _merge(merged, data)


def _validation_message(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"field {loc!r}: {err['msg']}")
    return f"{path}: " + "; ".join(parts)


def parse_task(path: Path, data: dict[str, Any]) -> TaskConfig:
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as exc:
        raise TaskConfigError(_validation_message(path, exc)) from None


def parse_group(path: Path, data: dict[str, Any]) -> GroupConfig:
    try:
        return GroupConfig.model_validate(data)
    except ValidationError as exc:
        raise TaskConfigError(_validation_message(path, exc)) from None


@dataclass
class Registry:
    """All tasks and groups found under one or more folders."""

    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    task_files: dict[str, Path] = field(default_factory=dict)
    groups: dict[str, GroupConfig] = field(default_factory=dict)
    group_files: dict[str, Path] = field(default_factory=dict)

    def add_file(self, path: Path) -> None:
        data = load_with_includes(path)
        if "group" in data and "task" in data and isinstance(data.get("task"), list):
            group = parse_group(path, data)
            self._claim(group.group, path)
            self.groups[group.group] = group
            self.group_files[group.group] = path
        elif "task" in data:
            task = parse_task(path, data)
            self._claim(task.task, path)
            self.tasks[task.task] = task
            self.task_files[task.task] = path
        else:
            raise TaskConfigError(
                f"{path}: expected a 'task:' name (task file) or 'group:' with a 'task:' list"
            )

    def _claim(self, name: str, path: Path) -> None:
        other = self.task_files.get(name) or self.group_files.get(name)
        if other is not None:
            raise TaskConfigError(f"{path}: name {name!r} is already defined in {other}")

    def add_folder(self, folder: Path) -> None:
        for path in sorted(folder.rglob("*.yaml")):
            if not path.name.startswith("_"):
                self.add_file(path)
        self._check_groups()

    def _check_groups(self) -> None:
        for name, group in self.groups.items():
            for member in group.task:
                if member not in self.tasks and member not in self.groups:
                    raise TaskConfigError(
                        f"{self.group_files[name]}: field 'task': {member!r} is not a known task"
                    )

    def tag_members(self, tag: str) -> list[str]:
        return sorted(name for name, cfg in self.tasks.items() if tag in cfg.tag)

    def all_names(self) -> list[str]:
        tags = {t for cfg in self.tasks.values() for t in cfg.tag}
        return sorted(set(self.tasks) | set(self.groups) | tags)

    def expand(self, names: str | list[str]) -> list[str]:
        """Expand a comma list of tasks, groups and tags into task names (ordered, unique)."""
        items = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        out: list[str] = []
        for name in filter(None, items):
            for task in self._expand_one(name):
                if task not in out:
                    out.append(task)
        return out

    def _expand_one(self, name: str) -> list[str]:
        if name in self.tasks:
            return [name]
        if name in self.groups:
            return [t for member in self.groups[name].task for t in self._expand_one(member)]
        members = self.tag_members(name)
        if members:
            return members
        import difflib

        close = difflib.get_close_matches(name, self.all_names(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise TaskConfigError(
            f"unknown task or group {name!r}.{hint} `harness tasks` lists them all."
        )


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of the tasks shipped in ``harness.tasks``."""
    registry = Registry()
    registry.add_folder(_tasks_dir())
    return registry
