"""Saving, loading and resuming under the Hugging Face Trainer: ``save_model`` ->
``from_pretrained`` gives the pruned model, ``resume_from_checkpoint`` is step-exact."""

from __future__ import annotations

import pytest
import torch

from .common import assert_same_resumed_state, make_batches, make_net

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from aswl.integrations.hf import STATE_FILE, ASWLTrainerCallback  # noqa: E402

from .test_hf import Samples, Wrapped  # noqa: E402


def _args(tmp_path, **kwargs) -> transformers.TrainingArguments:
    base = {"output_dir": str(tmp_path), "per_device_train_batch_size": 8,
            "report_to": [], "logging_strategy": "no", "disable_tqdm": True, "use_cpu": True,
            "dataloader_num_workers": 0, "seed": 0, "learning_rate": 0.05}
    return transformers.TrainingArguments(**{**base, **kwargs})


def test_hf_resume_from_checkpoint_is_step_exact(tmp_path) -> None:
    data = Samples(make_batches(12))
    options = {"target_sparsity": 0.8, "total_steps": 24, "finalize": False}
    reference = ASWLTrainerCallback(**options)
    args = _args(tmp_path, max_steps=24, save_strategy="steps", save_steps=12)
    transformers.Trainer(model=Wrapped(make_net()), args=args, train_dataset=data,
                         callbacks=[reference]).train()
    checkpoint = tmp_path / "checkpoint-12"
    assert (checkpoint / STATE_FILE).exists() and (checkpoint / "model.safetensors").exists()

    resumed = ASWLTrainerCallback(**options)
    trainer = transformers.Trainer(model=Wrapped(make_net(seed=7)), args=args,
                                   train_dataset=data, callbacks=[resumed])
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert_same_resumed_state(reference.method, resumed.method, steps=24)


def test_hf_resume_without_the_state_file_is_refused(tmp_path) -> None:
    data = Samples(make_batches(4))
    args = _args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    transformers.Trainer(model=Wrapped(make_net()), args=args, train_dataset=data,
                         callbacks=[ASWLTrainerCallback(0.5)]).train()
    (tmp_path / "checkpoint-2" / STATE_FILE).unlink()
    trainer = transformers.Trainer(model=Wrapped(make_net()), args=args, train_dataset=data,
                                   callbacks=[ASWLTrainerCallback(0.5)])
    with pytest.raises(ValueError, match="aswl_state.pt does not exist"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


class Tokens(torch.utils.data.Dataset):
    """Label 1 when token 5 occurs in the sequence: a task a tiny BERT learns in a few steps."""

    def __init__(self, count: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(6, 60, (count, 8), generator=gen)
        self.ids[: count // 2, 3] = 5
        self.labels = (self.ids == 5).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def tiny_bert(cls_name: str = "BertForSequenceClassification", seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=16, num_labels=2)
    return getattr(transformers, cls_name)(config)


def test_hf_save_model_loads_as_the_pruned_model(tmp_path) -> None:
    model, data = tiny_bert(), Tokens()
    callback = ASWLTrainerCallback(0.8, exclude=["classifier"])
    args = _args(tmp_path, num_train_epochs=2, save_strategy="no", learning_rate=1e-3)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[callback])
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert not any("parametrizations" in key for key in stored)
    loaded = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "saved"))
    plain = callback.method.export()
    ids = data.ids
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(input_ids=ids).logits,
                                   plain(input_ids=ids).logits)
    for name in callback.method.layers:
        want = plain.get_submodule(name).weight
        assert torch.equal(loaded.get_submodule(name).weight, want), name
    zeros = sum(int((loaded.get_submodule(n).weight == 0).sum()) for n in callback.method.layers)
    assert zeros / callback.method.total_numel == pytest.approx(0.8, abs=0.01)


class Masked(Tokens):
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def test_hf_save_keeps_the_tied_decoder_and_embedding_tied_and_pruned(tmp_path) -> None:
    model = tiny_bert("BertForMaskedLM")
    callback = ASWLTrainerCallback(0.7, schedule="constant")
    args = _args(tmp_path, max_steps=2, save_strategy="no", learning_rate=1e-3)
    transformers.Trainer(model=model, args=args, train_dataset=Masked(),
                         callbacks=[callback]).train()
    model.save_pretrained(str(tmp_path / "saved"))
    loaded = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "saved"))
    decoder = loaded.cls.predictions.decoder.weight
    words = loaded.bert.embeddings.word_embeddings.weight
    assert decoder.data_ptr() == words.data_ptr()  # still one tensor
    plain = callback.method.export()
    assert torch.equal(words, plain.bert.embeddings.word_embeddings.weight)
    assert float((words == 0).float().mean()) > 0.5
