from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sequence_rm_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from tlcr.models import load_sequence_classifier, load_tokenizer

    out = tmp_path_factory.mktemp("tiny-sequence-rm-eval")
    model = load_sequence_classifier(tiny_model_dir, num_labels=1, device="cpu", dtype="float32")
    model.save_pretrained(out)
    load_tokenizer(tiny_model_dir).save_pretrained(out)
    return out
