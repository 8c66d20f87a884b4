"""ASWLTrainerCallback with the real transformers.Trainer: the same model as the explicit loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .common import STEPS, assert_same_export, clone, explicit_loop, make_batches, make_net

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from aswl.integrations.hf import ASWLTrainerCallback  # noqa: E402


class Wrapped(torch.nn.Module):
    """The HF calling convention: keyword inputs, a dict with the loss."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append((pixels.detach().clone(), labels.detach().clone()))
        logits = self.net(pixels)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Samples(torch.utils.data.Dataset):
    def __init__(self, batches) -> None:
        self.items = [(x[i], y[i]) for x, y in batches for i in range(len(y))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, y = self.items[index]
        return {"pixels": x, "labels": y}


@pytest.mark.parametrize("method_name,options", [("aswl", {"target_sparsity": 0.8}),
                                                 ("gmp", {"target_sparsity": 0.7})])
def test_hf_callback_matches_the_explicit_loop(tmp_path, method_name, options) -> None:
    base, batches = make_net(), make_batches()
    model = Wrapped(clone(base))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    callback = ASWLTrainerCallback(method=method_name, **options)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1,
        max_grad_norm=0.0, report_to=[], save_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Samples(batches),
                                   optimizers=(optimizer, schedule), callbacks=[callback])
    trainer.train()
    method = callback.method
    assert method is not None and method.total_steps == STEPS and method.step_count == STEPS
    # the Trainer shuffles: replay the batches in the order it fed them
    assert len(model.seen) == STEPS
    reference = explicit_loop(clone(base), model.seen, method_name, **options)
    assert_same_export(reference, method)
    assert method.global_sparsity() == pytest.approx(options["target_sparsity"], abs=0.01)
