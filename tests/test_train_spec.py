"""Training configuration and launch: validation, QLoRA config, sweeps, accelerate commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, settings_from_dict
from pipeline.train.base_model import describe_base_model
from pipeline.train.launch import child_command, resolve_num_processes
from pipeline.train.scores import lcs_length, rouge_l
from pipeline.train.spec import RunSpec, SpecError, load_spec, sweep_trials


def test_config_names_every_bad_training_key() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict(
            {
                "training": {
                    "lora_r": 0,
                    "lr": 5,
                    "merge_dtype": "float16",
                    "sweep": {"momentum": [0.9], "lora_r": [8.5]},
                }
            }
        )
    text = str(err.value)
    for key in (
        "training.lora_r",
        "training.lr",
        "training.sweep.momentum",
        "training.sweep.lora_r",
    ):
        assert key in text
    assert "merge_dtype" not in text
    with pytest.raises(ConfigError, match=r"training\.quantize_4bit"):
        settings_from_dict({"training": {"quantize_4bit": "maybe"}})


def test_spec_round_trips_and_rejects_unknown_keys(tmp_path: Path) -> None:
    spec = RunSpec(run_id="r", trigger="cli", base_model="/m", sweep={"lr": [1e-4, 2e-4]})
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    assert load_spec(path) == spec
    path.write_text(spec.to_json().replace('"lr"', '"learning_rate"', 1))
    with pytest.raises(SpecError, match="learning_rate"):
        load_spec(path)


def test_sweep_is_the_cartesian_product_of_its_values() -> None:
    spec = RunSpec(
        run_id="r", trigger="cli", base_model="/m", sweep={"lr": [1e-4, 3e-4], "lora_r": [4, 8]}
    )
    trials = sweep_trials(spec)
    assert len(trials) == 4
    assert {"lr": 3e-4, "lora_r": 8} in trials
    assert spec.with_overrides({"lora_r": 8.0}).lora_r == 8
    assert sweep_trials(RunSpec(run_id="r", trigger="cli", base_model="/m")) == [{}]


def test_one_process_runs_the_recipe_module_directly() -> None:
    cmd = child_command(Path("/runs/x.tmp/spec.json"), num_processes=1, python="py")
    assert cmd == ["py", "-m", "pipeline.train.recipe", "/runs/x.tmp/spec.json"]
    assert resolve_num_processes(0, gpus=0) == 1
    assert resolve_num_processes(0, gpus=4) == 4
    assert resolve_num_processes(2, gpus=4) == 2


def test_several_gpus_launch_through_accelerate_with_ddp_or_fsdp() -> None:
    ddp = child_command(Path("s.json"), num_processes=4, distributed="ddp", python="py")
    assert ddp[:3] == ["py", "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in ddp
    assert ddp[ddp.index("--num_processes") + 1] == "4"
    assert ddp[-3:] == ["-m", "pipeline.train.recipe", "s.json"]
    fsdp = child_command(Path("s.json"), num_processes=2, distributed="fsdp", python="py")
    assert "--use_fsdp" in fsdp
    assert fsdp[fsdp.index("--fsdp_transformer_layer_cls_to_wrap") + 1] == "LlamaDecoderLayer"


def test_base_model_kinds_are_recognised(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert describe_base_model(str(gguf)).kind == "gguf"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert describe_base_model(str(tmp_path / "hf")).kind == "hf_dir"
    assert describe_base_model("meta-llama/Llama-3.2-1B-Instruct").kind == "hub"
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        describe_base_model(str(tmp_path))


def test_rouge_l_is_the_lcs_f1_of_words() -> None:
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert rouge_l("", "anything") == 0.0
    # LCS = "police the gunman": 3 of 4 candidate words, 3 of 5 reference words.
    assert rouge_l("police killed the gunman", "the police kill the gunman") == pytest.approx(
        2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5)
    )
