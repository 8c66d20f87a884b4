"""Channel mode on real torchvision/timm models (slow; skipped where they cannot import).

torchvision's PyPI wheel is a CUDA build that does not import beside the CPU torch this
project pins; its model zoo is pure Python and imports once its two C++ op schemas exist,
which :func:`zoo` provides when the plain import fails. Each model goes through attach, a few
steps, finalize and export: the export must equal the masked model (``export()`` checks that
itself) or attach must refuse with a ConfigError.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import aswl
from aswl.methods import ConfigError

pytest.importorskip("torch_pruning")
pytestmark = pytest.mark.slow


def zoo() -> Any:
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    try:
        import torchvision.models as models
    except Exception:  # the CUDA wheel beside a CPU torch: define its op schemas, retry
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            zoo.library = lib  # type: ignore[attr-defined]  # keep the schemas alive
            import torchvision.models as models
        except Exception as err:
            pytest.skip(f"torchvision does not import here ({type(err).__name__})")
    return models


MODELS = {"resnet18": {}, "mobilenet_v2": {}, "efficientnet_b0": {}, "densenet121": {},
          "regnet_y_400mf": {}, "squeezenet1_1": {}, "convnext_tiny": {},
          "vit_b_16": {"image_size": 64}}
REFUSED = {"shufflenet_v2_x0_5": "reshape"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_real_model_slims_to_the_masked_model(name: str) -> None:
    models = zoo()
    torch.manual_seed(0)
    model = getattr(models, name)(num_classes=10, **MODELS[name])
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    method = aswl.sparsify(model, optimizer, total_steps=20, method="aswl",
                           structure="channel", target_sparsity=0.5, example_inputs=x[:1])
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        assert math.isfinite(float(loss.detach()))
    method.finalize()
    thin = method.export()  # checks the slimmed model against the masked one itself
    model.eval()
    with torch.no_grad():
        want, got = model(x), thin(x)
    assert got.shape == (4, 10)
    assert torch.allclose(want, got, rtol=1e-3, atol=1e-4 * float(want.abs().max()))
    assert sum(p.numel() for p in thin.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_model_the_tracer_cannot_follow_is_refused_at_attach(name: str) -> None:
    models = zoo()
    model = getattr(models, name)(num_classes=10)
    with pytest.raises(ConfigError, match=REFUSED[name]):
        aswl.create_method("aswl", model, total_steps=10, structure="channel",
                           example_inputs=torch.zeros(1, 3, 64, 64))
