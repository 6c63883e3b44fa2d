"""What identifies a run: the data manifest hash, the git commit, the config as flat params."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from compliance.clock import sha256_file

_MAX_PARAM_CHARS = 6000  # MLflow 3.x limit on a param value; the full config is also logged as JSON


def data_manifest_hash(paths_or_records: Iterable[str | os.PathLike | Mapping[str, Any]]) -> str:
    """A sha256 that identifies a data set, insensitive to order and location.

    Entries: a file path contributes the sha256 of its bytes; a folder contributes each file under
    it as ``relative/path:sha256``; a record (mapping) contributes its canonical JSON
    (sorted keys). The hex sha256 of the sorted entries, joined by newlines, is returned.
    The hash is one-way, so records holding PHI may be hashed; the records are never logged.

    Raises:
        FileNotFoundError: a path does not exist (the message names the path).
        TypeError: an entry is neither a path nor a mapping.
    """
    entries: list[str] = []
    for item in paths_or_records:
        if isinstance(item, Mapping):
            entries.append("record:" + json.dumps(item, sort_keys=True, default=str, ensure_ascii=False))
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                for f in sorted(p for p in path.rglob("*") if p.is_file()):
                    entries.append(f"file:{f.relative_to(path).as_posix()}:{sha256_file(f)}")
            elif path.is_file():
                entries.append(f"file:{sha256_file(path)}")
            else:
                raise FileNotFoundError(f"data manifest entry not found: {path}")
        else:
            raise TypeError(f"data manifest entries must be paths or mappings, got {type(item).__name__}")
    return hashlib.sha256("\n".join(sorted(entries)).encode("utf-8")).hexdigest()


def git_info(repo_dir: str | Path | None = None) -> dict[str, str]:
    """``{"git_commit": sha | "unknown", "git_dirty": "true" | "false" | "unknown"}``.

    Args:
        repo_dir: a folder inside the checkout; default: the folder holding this package.
    """
    cwd = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else ("true" if status else "false")
    return {"git_commit": commit, "git_dirty": dirty}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config (mapping or dataclass instance, possibly nested) as a plain dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    raise TypeError(f"config must be a mapping or a dataclass instance, got {type(config).__name__}")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become JSON strings; values cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, name))
            continue
        text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
        flat[name] = text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."
    return flat
