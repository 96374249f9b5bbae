"""Load doctune.toml into typed Settings: validated, unknown keys rejected, all errors at once."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pipeline.settings import Settings
from pipeline.train.spec import training_problems

__all__ = ["ConfigError", "load_config", "resolve_config_path", "settings_from_dict"]

ENV_CONFIG = "DOCTUNE_CONFIG"
DEFAULT_CONFIG = Path("doctune.toml")


class ConfigError(Exception):
    """Every problem found in a configuration file, each naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def __str__(self) -> str:
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"invalid configuration {self.source}:\n{lines}"


def resolve_config_path(explicit: str | Path | None) -> Path | None:
    """Explicit argument > $DOCTUNE_CONFIG > ./doctune.toml; None when none exists (defaults)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load_config(path: str | Path | None) -> tuple[Settings, Path | None]:
    """Read and validate the config; relative paths resolve against the file's directory."""
    resolved = resolve_config_path(path)
    if resolved is None:
        return _absolutize(Settings(), Path.cwd()), None
    try:
        raw = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(resolved), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(resolved), [f"cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(resolved), [f"not valid TOML: {exc}"]) from None
    settings = settings_from_dict(raw, source=str(resolved))
    return _absolutize(settings, resolved.resolve().parent), resolved


def settings_from_dict(raw: dict[str, Any], *, source: str = "<dict>") -> Settings:
    """Build Settings from parsed TOML, raising ConfigError listing every bad key."""
    problems: list[str] = []
    settings = _build(Settings, raw, "", problems)
    if settings is not None:
        # Value checks run even when other keys are wrong (all errors at once), but not on a
        # key whose type was already wrong (its placeholder value would be reported twice).
        bad_keys = {p.split(":", 1)[0] for p in problems}
        problems.extend(p for p in _check_ranges(settings) if not _names_bad_key(p, bad_keys))
    if problems:
        raise ConfigError(source, problems)
    return typing.cast(Settings, settings)


def _names_bad_key(problem: str, bad_keys: set[str]) -> bool:
    key = problem.split(":", 1)[0]
    return any(key == bad or key.startswith(bad + ".") or key.startswith(bad + "[")
               for bad in bad_keys)  # fmt: skip


def _url_problem(key: str, url: str) -> str | None:
    """An http(s) URL with a host, or why not (checked at load, not at the first request)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a non-numeric or out-of-range port
    except ValueError as exc:
        return f"{key}: {url!r} is not a valid URL ({exc}); expected e.g. http://127.0.0.1:11434"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{key}: {url!r} is not an http(s) URL; expected e.g. http://127.0.0.1:11434"
    del port
    return None


_DURATION_RE = r"[-+]?(0|((\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h))+)"


def _keep_alive_problem(value: str) -> str | None:
    import re

    if not value or re.fullmatch(_DURATION_RE, value):
        return None
    try:
        float(value)
    except ValueError:
        return (
            f'generator.keep_alive: {value!r} is neither seconds (e.g. "-1" = forever) nor a'
            ' duration (e.g. "30m", "1h30m")'
        )
    return None


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, got {type(raw).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name in fields:
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], f"{prefix}{name}", problems)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        problems.append(f"{where}: {exc}")
        return None


def _coerce(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, problems)
    if origin is Literal:
        if value not in args:
            problems.append(f"{key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {type(value).__name__}")
            return []
        return [_coerce(args[0], item, f"{key}[{i}]", problems) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a table, got {type(value).__name__}")
            return {}
        return {k: _coerce(args[1], v, f"{key}.{k}", problems) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, f"{key}.", problems)
    if hint is Path:
        if not isinstance(value, str) or not value:
            problems.append(f"{key}: expected a path string, got {value!r}")
            return Path(".")
        return Path(value).expanduser()
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: expected a number, got {value!r}")
            return 0.0
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: expected an integer, got {value!r}")
            return 0
        return value
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _check_ranges(s: Settings) -> list[str]:
    problems = []
    c = s.chunking
    if not 0 < c.min_chars <= c.max_chars:
        problems.append("chunking.min_chars: must be > 0 and <= chunking.max_chars")
    if not 0 <= c.overlap_chars < c.max_chars // 2:
        problems.append("chunking.overlap_chars: must be >= 0 and < chunking.max_chars / 2")
    if not 0 < c.code_min_chars <= c.code_max_chars:
        problems.append("chunking.code_min_chars: must be > 0 and <= chunking.code_max_chars")
    if not 0 <= c.code_overlap_chars < c.code_max_chars // 2:
        problems.append("chunking.code_overlap_chars: must be >= 0 and < code_max_chars / 2")
    known = {"heading", "paragraph", "fixed", "code_fixed", "code_ast"}
    for strategy in c.strategies:
        if strategy not in known:
            problems.append(f"chunking.strategies: unknown strategy {strategy!r}")
    g = s.generator
    urls = [("generator.url", g.url), ("registry.ollama_url", s.registry.ollama_url)]
    urls += [(f"generator.endpoints[{i}].url", ep.url) for i, ep in enumerate(g.endpoints)]
    problems.extend(p for key, url in urls if (p := _url_problem(key, url)) is not None)
    if (problem := _keep_alive_problem(g.keep_alive)) is not None:
        problems.append(problem)
    if g.concurrency < 1:
        problems.append("generator.concurrency: must be >= 1")
    if g.pairs_per_chunk < 1:
        problems.append("generator.pairs_per_chunk: must be >= 1")
    if g.lease_s <= g.timeout_s:
        problems.append(
            "generator.lease_s: must be > generator.timeout_s (a lease outlives a call)"
        )
    if not 0 < g.min_overlap <= 1:
        problems.append("generator.min_overlap: must be in (0, 1]")
    if not 0 < g.near_duplicate_jaccard <= 1:
        problems.append("generator.near_duplicate_jaccard: must be in (0, 1]")
    if g.max_attempts < 1:
        problems.append("generator.max_attempts: must be >= 1")
    if g.max_repairs < 0:
        problems.append("generator.max_repairs: must be >= 0")
    if g.engine_threads < 0:
        problems.append("generator.engine_threads: must be >= 0 (0 = every core)")
    if g.min_question_chars > g.max_question_chars or g.min_answer_chars > g.max_answer_chars:
        problems.append("generator: min_*_chars must be <= max_*_chars")
    for i, ep in enumerate(g.endpoints):
        if ep.concurrency < 1:
            problems.append(f"generator.endpoints[{i}].concurrency: must be >= 1")
    if not 0 < s.training.holdout_fraction < 1:
        problems.append("training.holdout_fraction: must be between 0 and 1")
    problems.extend(training_problems(s.training))
    if s.training.min_new_pairs < 1:
        problems.append("training.min_new_pairs: must be >= 1")
    if s.training.min_interval_s < 0:
        problems.append("training.min_interval_s: must be >= 0")
    if s.training.timeout_s < 0:
        problems.append("training.timeout_s: must be >= 0 (0 = no limit)")
    if s.sources.max_file_bytes < 1:
        problems.append("sources.max_file_bytes: must be >= 1")
    problems.extend(_check_daemon(s))
    problems.extend(_check_evaluation(s))
    names = [r.name for r in s.sources.repo]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"sources.repo: duplicate name {name!r}")
    return problems


def _check_evaluation(s: Settings) -> list[str]:
    from pipeline.evaluation.sets import set_name

    problems = []
    e, t = s.evaluation, s.training
    if not 0 <= t.validation_fraction < 1 or t.holdout_fraction + t.validation_fraction >= 1:
        problems.append(
            "training.validation_fraction: must be >= 0 and leave room for training"
            " (holdout_fraction + validation_fraction < 1)"
        )
    if t.sweep and t.validation_fraction <= 0:
        problems.append("training.validation_fraction: a sweep needs a validation part (> 0)")
    if e.retrieval_k < 1:
        problems.append("evaluation.retrieval_k: must be >= 1")
    if e.generate_examples < 0:
        problems.append("evaluation.generate_examples: must be >= 0")
    if e.max_new_tokens < 1:
        problems.append("evaluation.max_new_tokens: must be >= 1")
    names = [set_name(p) for p in e.sets]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"evaluation.sets: two sets named {name!r} (the file name is the name)")
    gate = s.registry.gate_set
    if gate and gate not in names:
        problems.append(
            f"registry.gate_set: {gate!r} is not one of the [evaluation] sets"
            f" ({', '.join(names) or 'none configured'})"
        )
    return problems


def _check_daemon(s: Settings) -> list[str]:
    from daemon.listen import parse_listen

    problems = []
    d, w = s.daemon, s.watch
    try:
        parse_listen(d.status_listen)
    except ValueError as exc:
        problems.append(f"daemon.status_listen: {exc}")
    if d.drain_timeout_s < 0:
        problems.append("daemon.drain_timeout_s: must be >= 0")
    for key in ("status_interval_s", "training_check_interval_s"):
        if getattr(d, key) <= 0:
            problems.append(f"daemon.{key}: must be > 0")
    if d.retrain_coalesce_s < 0:
        problems.append("daemon.retrain_coalesce_s: must be >= 0")
    if ":" not in d.retrain_entrypoint:
        problems.append("daemon.retrain_entrypoint: expected 'module:function'")
    if w.debounce_ms < 1:
        problems.append("watch.debounce_ms: must be >= 1")
    if w.reconcile_interval_s <= 0:
        problems.append("watch.reconcile_interval_s: must be > 0")
    if w.max_batch < 1:
        problems.append("watch.max_batch: must be >= 1")
    return problems


def _absolutize(s: Settings, base: Path) -> Settings:
    """Resolve relative paths against the config file's directory (or the cwd)."""

    def absolute(p: Path) -> Path:
        # normpath, not resolve(): `examples/../data` becomes `data`, symlinks stay as written
        return Path(os.path.normpath(p if p.is_absolute() else base / p))

    runtime = s.paths.runtime_dir
    paths = dataclasses.replace(
        s.paths,
        state_dir=absolute(s.paths.state_dir),
        models_dir=absolute(s.paths.models_dir),
        runtime_dir=None if runtime is None else absolute(runtime),
    )
    repos = [dataclasses.replace(r, path=absolute(r.path)) for r in s.sources.repo]
    source_dir = s.sources.dir
    sources = dataclasses.replace(
        s.sources, dir=None if source_dir is None else absolute(source_dir), repo=repos
    )
    gen = s.generator
    if gen.model_path is not None:
        gen = dataclasses.replace(gen, model_path=absolute(gen.model_path))
    evaluation = dataclasses.replace(s.evaluation, sets=[absolute(p) for p in s.evaluation.sets])
    return dataclasses.replace(
        s, paths=paths, sources=sources, generator=gen, evaluation=evaluation
    )
