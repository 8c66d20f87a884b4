"""Every Python block of the README runs (on a tiny net and loader), so the examples cannot
drift from the API. Blocks that need Lightning or transformers skip when those are absent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


class MyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.fc2(torch.relu(self.fc1(x.flatten(1))))
        if labels is None:
            return logits
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def prelude(code: str, tmp_path: Path) -> dict:
    gen = torch.Generator().manual_seed(0)
    loader = [(torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,),
                                                                       generator=gen))
              for _ in range(4)]
    names: dict = {"MyNet": MyNet, "loader": loader, "epochs": 2}
    if "trained.pt" in code:  # the "pruning a trained model" example loads one
        torch.save(MyNet().state_dict(), tmp_path / "trained.pt")
    if "lightning" in code:
        lightning = pytest.importorskip("lightning")

        class Module(lightning.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = MyNet()

            def training_step(self, batch, batch_idx):
                return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.05)

        names["lightning_module"] = Module()
        names["loader"] = torch.utils.data.DataLoader(loader, batch_size=None)
        tmp_path.mkdir(exist_ok=True)
    if "transformers" in code:
        transformers = pytest.importorskip("transformers")
        pytest.importorskip("accelerate")

        class Samples(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return 32

            def __getitem__(self, i: int) -> dict:
                x, y = loader[i // 8]
                return {"x": x[i % 8], "labels": y[i % 8]}

        names["hf_model"] = MyNet()
        names["dataset"] = Samples()
        names["training_args"] = transformers.TrainingArguments(
            output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=8,
            report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True)
    return names


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int, tmp_path: Path, monkeypatch) -> None:
    code = BLOCKS[index]
    monkeypatch.chdir(tmp_path)  # Lightning and the HF Trainer write into the working folder
    names = prelude(code, tmp_path)
    if 'structure="channel"' in code:
        pytest.importorskip("torch_pruning")
    from aswl.methods import registry  # a block that registers methods leaves no trace

    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))
    monkeypatch.setattr(registry, "ALIASES", set(registry.ALIASES))
    exec(compile(code, f"README.md block {index + 1}", "exec"), names)
    if "register_method(" in code:  # the "add a method" example: one of each granularity
        weights, channels = names["weights"], names["channels"]
        assert (weights.structure, channels.structure) == ("weight", "channel")
        assert registry.method_for(channels.name, "channel") is type(channels)
        return
    if "thin" in names:  # the channel-mode example: a thinner model, the masked one's outputs
        thin, model = names["thin"], names["model"].eval()
        assert thin.fc1.out_features < 64
        x = torch.randn(4, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(thin(x), model(x), atol=1e-5, rtol=1e-4)
        return
    plain = names["plain"]  # every other example ends with the exported plain model
    weights = [m.weight for m in plain.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert zeros / total == pytest.approx(0.95, abs=0.01)


def test_the_readme_has_the_examples() -> None:
    text = "\n".join(BLOCKS)
    assert len(BLOCKS) >= 4
    for name in ("aswl.sparsify(", "aswl.training_step(", "ASWLCallback(", "ASWLTrainerCallback("):
        assert name in text
