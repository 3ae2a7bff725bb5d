from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from tlcr.core.models import is_discriminator_config


def test_tiny_model_loads_by_path_with_auto_classes(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tok(" The capital of X is Y.", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == " The capital of X is Y."
    assert model.config.vocab_size == len(tok)


def test_tiny_discriminator_is_marked(tiny_token_classifier_dir: Path) -> None:
    assert is_discriminator_config(tiny_token_classifier_dir)
    model = AutoModelForTokenClassification.from_pretrained(tiny_token_classifier_dir)
    assert model.config.num_labels == 1
    assert AutoConfig.from_pretrained(tiny_token_classifier_dir).tlcr["max_length"] == 256
