"""Rendering with the base model's chat template, loss masking, and padding-free packing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_support import build_tiny_model

from pipeline.train.base_model import describe_base_model, load_base_model, load_tokenizer
from pipeline.train.batching import as_features, make_collator
from pipeline.train.recipe.setup import bnb_config, resolve_quantization
from pipeline.train.render import IGNORE_INDEX, Renderer
from pipeline.train.spec import PINNED_DATE, SpecError

LLAMA3_STYLE = (
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- endif %}<|im_start|>system\nToday Date: {{ date_string }}<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture
def renderer(tiny_dir: Path) -> Renderer:
    tokenizer = load_tokenizer(describe_base_model(str(tiny_dir)))
    return Renderer(tokenizer, {"date_string": PINNED_DATE})


def test_only_assistant_tokens_and_end_of_turn_carry_loss(renderer: Renderer) -> None:
    question, answer = "What is a ListingTable?", "A table provider over files."
    example = renderer.render(question, answer)
    tok = renderer.tokenizer
    labelled = [t for t in example.labels if t != IGNORE_INDEX]
    assert tok.decode(labelled) == answer + "<|im_end|>"  # the stop token is learned
    # Everything before the reply — system prompt, question, role headers — is masked,
    # and labels are the input ids themselves where they are set.
    first = next(i for i, t in enumerate(example.labels) if t != IGNORE_INDEX)
    assert question in tok.decode(example.input_ids[:first])
    assert tok.decode(example.input_ids[:first]).endswith("<|im_start|>assistant\n")
    assert example.labels[first : first + len(labelled)] == labelled
    assert example.input_ids[first : first + len(labelled)] == labelled
    # The newline the template prints after <|im_end|> is not trained.
    assert example.labels[-1] == IGNORE_INDEX
    assert renderer.format.stop_tokens == ["<|im_end|>"]


def test_template_dates_are_pinned(renderer: Renderer) -> None:
    renderer.tokenizer.chat_template = LLAMA3_STYLE
    pinned = Renderer(renderer.tokenizer, {"date_string": PINNED_DATE})
    text = pinned.full_text("Q?", "A.")
    assert f"Today Date: {PINNED_DATE}" in text
    assert pinned.format.template_vars == {"date_string": PINNED_DATE}
    assert pinned.render("Q?", "  A.  ").n_answer_tokens > 0  # the template trims content


def test_packed_batch_equals_separate_forward_passes(tiny_dir: Path, renderer: Renderer) -> None:
    model = load_base_model(describe_base_model(str(tiny_dir)), dtype=torch.float32).eval()
    examples = [
        renderer.render("Short question?", "Short answer."),
        renderer.render("A somewhat longer question about plans?", "A longer answer, too."),
    ]
    batch = make_collator(packing=True, pad_id=0)(as_features(examples))
    assert batch["input_ids"].shape == (1, sum(len(e.input_ids) for e in examples))
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        alone = [model(input_ids=torch.tensor([e.input_ids])).logits for e in examples]
    # Identical logits ⇒ the second example never attended to the first.
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), rtol=1e-4, atol=1e-4)


def test_packing_computes_no_padding(renderer: Renderer) -> None:
    examples = [renderer.render(f"Question {i}?" + " more" * i * 5, "Answer.") for i in range(4)]
    packed = make_collator(packing=True, pad_id=0)
    padded = make_collator(packing=False, pad_id=0)
    packed(as_features(examples))
    padded(as_features(examples))
    assert packed.tokens == packed.padded_tokens == padded.tokens
    assert padded.padded_tokens > padded.tokens


def test_4bit_true_without_cuda_fails_with_a_clear_reason(tiny_dir: Path) -> None:
    ref = describe_base_model(str(tiny_dir))
    with pytest.raises(SpecError, match="quantize_4bit: true, but no CUDA"):
        resolve_quantization("true", cuda=False, ref=ref, bnb_available=True)
    assert resolve_quantization("auto", cuda=False, ref=ref, bnb_available=True)[0] is False
    assert resolve_quantization("auto", cuda=True, ref=ref, bnb_available=True)[0] is True
    assert resolve_quantization("false", cuda=True, ref=ref, bnb_available=True)[0] is False


def test_qlora_quantization_config_is_nf4_with_double_quantization() -> None:
    config = bnb_config(torch.bfloat16)
    assert config.load_in_4bit
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 4-bit needs CUDA")
def test_qlora_trains_lora_on_a_4bit_base(tiny_dir: Path, renderer: Renderer) -> None:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = load_base_model(
        describe_base_model(str(tiny_dir)),
        dtype=torch.bfloat16,
        quantization_config=bnb_config(torch.bfloat16),
        device_map={"": 0},
    )
    assert getattr(model, "is_loaded_in_4bit", False)
    model = get_peft_model(
        prepare_model_for_kbit_training(model),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    batch = make_collator(packing=True, pad_id=0)(as_features([renderer.render("Q?", "A.")]))
    loss = model(**{k: v.cuda() for k, v in batch.items()}).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_answer_only_logits_give_the_standard_loss(tiny_dir: Path, renderer: Renderer) -> None:
    from pipeline.train.answer_loss import answer_only_loss

    model = load_base_model(describe_base_model(str(tiny_dir)), dtype=torch.float32)
    examples = [renderer.render("Q one?", "Answer one."), renderer.render("Q two?", "Two.")]
    batch = make_collator(packing=True, pad_id=0)(as_features(examples))
    standard = model(**batch, use_cache=False).loss
    ours, outputs = answer_only_loss(model, batch)
    torch.testing.assert_close(ours, standard)
    # Only the labelled positions were projected onto the vocabulary.
    assert outputs.logits.numel() // outputs.logits.shape[-1] == sum(
        e.n_answer_tokens for e in examples
    )
