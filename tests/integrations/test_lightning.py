"""ASWLCallback with the real Lightning Trainer: the same model as the explicit loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .common import STEPS, assert_same_export, clone, explicit_loop, make_batches, make_net

L = pytest.importorskip("lightning")
from aswl.integrations.lightning import ASWLCallback  # noqa: E402


class Module(L.LightningModule):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


@pytest.mark.parametrize("method_name,options", [("aswl", {"target_sparsity": 0.8}),
                                                 ("aswl_paper", {})])
def test_lightning_callback_matches_the_explicit_loop(tmp_path, method_name, options) -> None:
    base, batches = make_net(), make_batches()
    reference = explicit_loop(clone(base), batches, method_name, **options)

    module = Module(clone(base))
    callback = ASWLCallback(method=method_name, **options)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[callback], default_root_dir=tmp_path)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the batches, in order
    trainer.fit(module, train_dataloaders=loader)
    method = callback.method
    assert method is not None and method.total_steps == STEPS
    assert method.step_count == STEPS
    assert_same_export(reference, method, exact=method_name == "aswl")
    if method_name == "aswl":
        assert method.global_sparsity() == pytest.approx(0.8, abs=0.01)
