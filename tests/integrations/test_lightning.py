"""ASWLCallback with the real Lightning Trainer: the same model as the explicit loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .common import (
    STEPS,
    assert_same_export,
    assert_same_resumed_state,
    clone,
    explicit_loop,
    make_batches,
    make_net,
)

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


def _trainer(tmp_path, callback, epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, callbacks=[callback, *kwargs.pop("extra", [])],
                     default_root_dir=tmp_path, **kwargs)


def test_lightning_resume_is_step_exact_and_checkpoints_load_as_plain_models(tmp_path) -> None:
    """fit -> a checkpoint mid-run -> a fresh model and callback fit(ckpt_path=...) end where the
    uninterrupted run ends: same masks, attentions, dense weights and method state."""
    batches = make_batches(12)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    options = {"target_sparsity": 0.8, "total_steps": 24, "finalize": False}
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1,
                                                every_n_train_steps=12)
    reference = ASWLCallback(**options)
    _trainer(tmp_path, reference, 2, extra=[saver]).fit(Module(make_net()), loader)
    mid = tmp_path / "ckpt" / "epoch=0-step=12.ckpt"
    assert mid.exists()

    resumed = ASWLCallback(**options)
    module = Module(make_net(seed=7))  # other initial weights: everything comes from the file
    _trainer(tmp_path, resumed, 2, enable_checkpointing=False).fit(module, loader,
                                                                   ckpt_path=mid)
    assert_same_resumed_state(reference.method, resumed.method, steps=24)

    # the checkpoint's model is the plain pruned model: strict loading into a fresh module
    checkpoint = torch.load(mid, weights_only=False)
    assert not any("parametrizations" in key for key in checkpoint["state_dict"])
    loaded = Module.load_from_checkpoint(mid, net=make_net(seed=3))
    saved = next(v for k, v in checkpoint["callbacks"].items() if "ASWLCallback" in k)
    for name in ("net.conv", "net.fc1", "net.fc2"):
        mask = saved["tensors"][f"{name}.weight"]["0.mask"]
        weight = loaded.get_submodule(name).weight
        assert torch.equal(weight != 0, mask), name
    for key, values in saved["tensors"].items():  # plain weight = dense * mask
        assert torch.equal(checkpoint["state_dict"][key], values["original"] * values["0.mask"])
    assert not torch.equal(loaded.net.fc1.weight, make_net(seed=3).fc1.weight)
