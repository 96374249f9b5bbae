"""Typed settings for every stage: frozen dataclasses, no I/O (daemon/config.py loads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "ChunkingSettings",
    "DaemonSettings",
    "EndpointSettings",
    "EvaluationSettings",
    "GeneratorSettings",
    "PathsSettings",
    "RegistrySettings",
    "RepoSettings",
    "ServeSettings",
    "Settings",
    "SourcesSettings",
    "TrainingSettings",
    "WatchSettings",
]

DEFAULT_DOCS = ["docs/**/*.md", "docs/**/*.rst", "docs/source/**/*.md", "docs/source/**/*.rst"]
DEFAULT_CODE = [
    "*.rs",
    "*.py",
    "*.c",
    "*.cpp",
    "*.h",
    "*.hpp",
    "src/**/*.rs",
    "src/**/*.py",
    "src/**/*.c",
    "src/**/*.cpp",
    "src/**/*.h",
    "src/**/*.hpp",
    "examples/**/*.rs",
    "examples/**/*.py",
    "examples/**/*.c",
    "examples/**/*.cpp",
    "examples/**/*.h",
    "examples/**/*.hpp",
]
ALWAYS_EXCLUDED_DIRS = (".git", "target", "node_modules", ".venv")


@dataclass(frozen=True)
class PathsSettings:
    """Where doctune writes: the database and JSONL exports, and training runs."""

    state_dir: Path = Path("data")
    models_dir: Path = Path("models")
    runtime_dir: Path | None = None  # pidfile; default: $RUNTIME_DIRECTORY or state_dir

    @property
    def db_path(self) -> Path:
        return self.state_dir / "doctune.sqlite3"


@dataclass(frozen=True)
class RepoSettings:
    """One repository: a name, a root, and which files count as docs and code."""

    name: str
    path: Path
    docs: list[str] = field(default_factory=lambda: list(DEFAULT_DOCS))
    code: list[str] = field(default_factory=lambda: list(DEFAULT_CODE))
    exclude: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourcesSettings:
    """Every subdirectory of `dir` is a repository; `repo` entries override or add."""

    dir: Path | None = Path("sources")
    repo: list[RepoSettings] = field(default_factory=list)
    max_file_bytes: int = 2_000_000
    docs: list[str] = field(default_factory=lambda: list(DEFAULT_DOCS))
    code: list[str] = field(default_factory=lambda: list(DEFAULT_CODE))
    exclude: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkingSettings:
    """Chunk sizes and strategies; code may have its own sizes."""

    strategies: list[str] = field(
        default_factory=lambda: ["heading", "paragraph", "fixed", "code_fixed", "code_ast"]
    )
    min_chars: int = 200
    max_chars: int = 1500
    overlap_chars: int = 150
    code_min_chars: int = 200
    code_max_chars: int = 2000
    code_overlap_chars: int = 200
    workers: int = 0  # parallel parse processes; 0 = os.cpu_count()


@dataclass(frozen=True)
class EndpointSettings:
    """One generator endpoint with its own concurrency bound."""

    url: str
    concurrency: int = 1


@dataclass(frozen=True)
class GeneratorSettings:
    """The LLM that writes question/answer pairs."""

    # auto: Ollama when it answers at `url`, else the embedded llama.cpp engine (`llamacpp`)
    backend: Literal["auto", "ollama", "openai", "llamacpp"] = "auto"
    url: str = "http://127.0.0.1:11434"
    endpoints: list[EndpointSettings] = field(default_factory=list)
    model: str = "llama3.2:3b"  # for ollama/openai; the embedded engine is named by its file
    model_path: Path | None = None  # GGUF of the embedded engine; None = bundled SmolLM2
    engine_threads: int = 0  # embedded engine's llama.cpp threads; 0 = every core
    # qa: the model writes question and answer; backtranslate: it writes only the question a
    # verbatim span of the chunk answers (the span is the answer)
    mode: Literal["qa", "backtranslate"] = "backtranslate"
    concurrency: int = 2
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    pairs_per_chunk: int = 1
    stream: bool = False
    temperature: float = 0.2
    seed: int = 42
    num_predict: int = 512
    num_ctx: int = 4096
    max_attempts: int = 5
    max_repairs: int = 2
    lease_s: float = 300.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    breaker_threshold: int = 5
    breaker_probe_s: float = 5.0
    min_overlap: float = 0.5  # answer tokens that must occur in the chunk
    min_question_chars: int = 10
    max_question_chars: int = 300
    min_answer_chars: int = 20
    max_answer_chars: int = 2000
    near_duplicate_jaccard: float = 0.85  # same-repo questions this similar are duplicates
    keep_alive: str = ""  # Ollama keep_alive, e.g. "30m"; "" = the server's default
    outage_give_up_s: float = 300.0  # run --once exits 1 after this long unreachable
    export_interval_s: float = 5.0  # how often changed <repo>_qa.jsonl files are rewritten


@dataclass(frozen=True)
class WatchSettings:
    """How the daemon notices changes."""

    mode: Literal["worktree", "commits"] = "worktree"
    debounce_ms: int = 200
    reconcile_interval_s: float = 600.0
    max_batch: int = 500  # a bigger event batch triggers a full rescan of that repo


@dataclass(frozen=True)
class DaemonSettings:
    """The long-running process."""

    status_listen: str = "127.0.0.1:8377"
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"])
    drain_timeout_s: float = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"  # auto: JSON unless a terminal
    status_interval_s: float = 5.0  # how often systemd's STATUS= line is refreshed
    training_check_interval_s: float = 30.0  # how often the pair threshold is checked
    retrain_coalesce_s: float = 1.0  # requests closer together than this start one run
    retrain_entrypoint: str = "pipeline.retrain:retrain"  # "module:function" the scheduler runs


@dataclass(frozen=True)
class TrainingSettings:
    """LoRA / QLoRA hyperparameters and when to retrain."""

    base_model: str = ""  # HF dir or hub id, or a .gguf file; "" = the bundled SmolLM2
    epochs: float = 5.0  # measured: bench/RESULTS.md "Gain vs steps on real pairs"
    max_steps: int = -1
    lr: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 512
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # All linear layers: at equal steps 1.8x the attention-only gain on questions people wrote
    # (bench/RESULTS.md, "Knowledge (issue 11)").
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
        ]
    )  # fmt: skip
    holdout_fraction: float = 0.1  # test part: reported and gated (split by source chunk)
    validation_fraction: float = 0.1  # validation part: picks the sweep's winner
    quantize_4bit: Literal["auto", "true", "false"] = "auto"
    min_new_pairs: int = 200
    min_interval_s: float = 3600.0
    seed: int = 0
    sweep: dict[str, list[float]] = field(default_factory=dict)  # lr / lora_r / epochs
    packing: bool = True  # padding-free batches (position_ids reset per example)
    cpu_bf16: Literal["auto", "true", "false"] = "auto"  # bf16 autocast when training on a CPU
    warmup_ratio: float = 0.03
    merge_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    eval_max_examples: int = 200  # holdout pairs scored by teacher-forced NLL
    eval_generate_examples: int = 32  # holdout pairs answered greedily for ROUGE-L
    eval_max_new_tokens: int = 128
    num_processes: int = 0  # 0 = one per visible GPU (>1 ⇒ `accelerate launch`), else exact
    distributed: Literal["ddp", "fsdp"] = "ddp"
    timeout_s: float = 0.0  # 0 = no limit for the training child


@dataclass(frozen=True)
class RegistrySettings:
    """Where and how the tuned model is served."""

    # ollama: Ollama's model store; llamacpp: versioned GGUFs under models_dir/registry;
    # auto: Ollama when it answers at ollama_url, else llamacpp (decided at each registration)
    backend: Literal["ollama", "llamacpp", "auto"] = "auto"
    ollama_url: str = "http://127.0.0.1:11434"
    model_name: str = "doctune"
    mode: Literal["safetensors", "gguf"] = "gguf"
    quantize: str = ""
    keep_versions: int = 3
    min_gain: float = 0.02  # relative holdout-NLL improvement required
    max_drift: float = 0.10  # allowed relative general-text perplexity increase
    auto_register: bool = True  # ship every successful retrain (gate → create → alias)
    gate_set: str = ""  # name of an [evaluation] set the gate uses instead of the holdout


@dataclass(frozen=True)
class EvaluationSettings:
    """Question sets people wrote, pages kept out of training, the retrieval baseline."""

    sets: list[Path] = field(default_factory=list)  # JSONL: question, answer[, source]
    holdout_globs: list[str] = field(default_factory=list)  # pages kept out of gen + training
    retrieval_baseline: bool = False  # also score the base model given top-k BM25 chunks
    retrieval_k: int = 2
    generate_examples: int = 32  # questions per set answered greedily (ROUGE-L)
    max_new_tokens: int = 128


@dataclass(frozen=True)
class ServeSettings:
    """`doctune serve`: an OpenAI-compatible endpoint for the embedded registry's version."""

    enabled: bool = False  # run it as a daemon component
    host: str = "127.0.0.1"
    port: int = 8378
    n_ctx: int = 2048
    n_threads: int = 0  # 0 = every core this process may use
    poll_s: float = 2.0  # how often the registry's current pointer is checked
    drain_timeout_s: float = 60.0  # how long an old version finishes requests after a switch
    max_tokens: int = 256  # default completion length when a request names none


@dataclass(frozen=True)
class Settings:
    """The whole configuration file."""

    paths: PathsSettings = field(default_factory=PathsSettings)
    sources: SourcesSettings = field(default_factory=SourcesSettings)
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
