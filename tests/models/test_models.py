"""Tests for aswl.models: registry, shapes, parameter counts, hook-friendliness."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from aswl.models import (
    ModelError,
    create_model,
    default_input_shape,
    list_models,
    register_model,
)

EXPECTED = {
    "lenet300",
    "lenet5",
    "mobilenetv2_cifar",
    "vgg16",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "resnet56_preact",
    "resnet18",
    "resnet50",
}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registered_names() -> None:
    assert set(list_models()) == EXPECTED
    assert list_models() == sorted(list_models())
    assert not any(":" in n for n in list_models())


@pytest.mark.parametrize(
    "name,shape",
    [("lenet300", (1, 28, 28)), ("lenet5", (1, 28, 28)), ("vgg16", (3, 32, 32)),
     ("resnet20", (3, 32, 32)), ("resnet56_preact", (3, 32, 32)), ("resnet50", (3, 64, 64))],
)  # fmt: skip
def test_default_input_shape(name: str, shape: tuple[int, int, int]) -> None:
    assert default_input_shape(name) == shape


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in ("vgg16", "resnet50") else n for n in sorted(EXPECTED)])
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    shape = default_input_shape(name)
    model = create_model(name, num_classes=7, input_shape=shape)
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "name,num_classes,expected",
    [
        ("lenet300", 10, 266_610),
        ("lenet5", 10, 431_080),
        # option-B shortcuts add 2,752 params over the paper's option A (269,722 / 853,018)
        ("resnet20", 10, 272_474),
        ("resnet32", 10, 466_906),
        ("resnet56", 10, 855_770),
        ("resnet110", 10, 1_730_714),
        ("resnet56_preact", 10, 590_426),
        # 13 bias-free convs + BN (14,718,912) + 512-4096-4096-10 classifier (18,923,530)
        ("vgg16", 10, 33_642_442),
        ("resnet18", 1000, 11_689_512),  # torchvision value
        ("resnet50", 1000, 25_557_032),  # torchvision value
    ],
)
def test_param_counts(name: str, num_classes: int, expected: int) -> None:
    model = create_model(name, num_classes, default_input_shape(name))
    assert n_params(model) == expected


def test_param_counts_match_papers_approximately() -> None:
    assert round(n_params(create_model("resnet20", 10, (3, 32, 32))) / 1e6, 2) == 0.27
    assert round(n_params(create_model("resnet56", 10, (3, 32, 32))) / 1e6, 1) == 0.9  # 0.85M
    assert round(n_params(create_model("resnet50", 1000, (3, 64, 64))) / 1e6, 2) == 25.56


def test_input_shape_changes_first_layers() -> None:
    m = create_model("lenet5", 10, (3, 32, 32))
    assert m.conv1.in_channels == 3 and m.fc1.in_features == 50 * 5 * 5
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    m = create_model("lenet300", 10, (3, 32, 32))
    assert m.fc1.in_features == 3 * 32 * 32
    m = create_model("resnet20", 10, (1, 28, 28))
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ModelError):
        create_model("lenet5", 10, (1, 8, 8))


def test_layers_are_modules_and_relus_not_inplace() -> None:
    for name in ("resnet20", "resnet56_preact", "resnet18", "vgg16", "lenet5"):
        model = create_model(name, 10, default_input_shape(name))
        mods = dict(model.named_modules())
        assert any(isinstance(m, nn.Conv2d) for m in mods.values())
        for m in mods.values():
            if isinstance(m, nn.ReLU):
                assert not m.inplace, name


def test_forward_hook_scaling_conv_outputs() -> None:
    """A hook that scales every conv/linear output (attention-style) must not break autograd."""
    for name in ("resnet20", "resnet56_preact", "resnet18", "vgg16"):
        model = create_model(name, 5, default_input_shape(name))
        handles = [
            m.register_forward_hook(lambda _m, _i, o: o * 0.5)
            for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        model(torch.randn(2, *default_input_shape(name))).sum().backward()
        for h in handles:
            h.remove()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name


def test_zero_init_residual() -> None:
    m = create_model("resnet18", 10, (3, 64, 64), zero_init_residual=True)
    assert torch.count_nonzero(m.layer1[0].bn2.weight) == 0
    m = create_model("resnet50", 10, (3, 64, 64), zero_init_residual=True)
    assert torch.count_nonzero(m.layer4[2].bn3.weight) == 0
    m = create_model("resnet20", 10, (3, 32, 32))
    assert torch.all(m.layer1[0].bn2.weight == 1)


def test_option_b_shortcut_and_v15_stride() -> None:
    m = create_model("resnet20", 10, (3, 32, 32))
    assert m.layer1[0].downsample is None
    assert isinstance(m.layer2[0].downsample[0], nn.Conv2d)
    assert isinstance(m.layer2[0].downsample[1], nn.BatchNorm2d)
    m = create_model("resnet50", 1000, (3, 64, 64))
    assert m.layer2[0].conv1.stride == (1, 1) and m.layer2[0].conv2.stride == (2, 2)
    m = create_model("resnet56_preact", 10, (3, 32, 32))
    assert len(m.layer1) == len(m.layer2) == len(m.layer3) == 6
    assert m.fc.in_features == 256


def test_unknown_name_lists_models() -> None:
    with pytest.raises(ModelError) as ei:
        create_model("resnet9000")
    msg = str(ei.value)
    assert "resnet9000" in msg and "tv:" in msg and "timm:" in msg
    for name in EXPECTED:
        assert name in msg
    assert isinstance(ei.value, ValueError)
    with pytest.raises(ModelError):
        default_input_shape("nope")


def test_bad_kwarg_names_argument() -> None:
    with pytest.raises(ModelError, match="bogus"):
        create_model("lenet300", bogus=1)
    with pytest.raises(ModelError, match="zero_init_residual"):
        create_model("vgg16", 10, (3, 32, 32), zero_init_residual=True)


def test_bad_num_classes_and_shape() -> None:
    with pytest.raises(ModelError):
        create_model("lenet300", num_classes=0)
    with pytest.raises(ModelError):
        create_model("lenet300", input_shape=(28, 28))  # type: ignore[arg-type]


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="installed")
def test_tv_prefix_without_torchvision() -> None:
    with pytest.raises(ModelError, match=r"aswl\[vision\]"):
        create_model("tv:resnet18")


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="installed")
def test_timm_prefix_without_timm() -> None:
    with pytest.raises(ModelError, match=r"aswl\[timm\]"):
        create_model("timm:resnet18")


@pytest.mark.parametrize("error", ['RuntimeError("operator torchvision::nms does not exist")',
                                   'OSError("_C.so: undefined symbol: _ZN3c104cuda")'])
def test_tv_prefix_with_a_torchvision_built_for_another_torch(tmp_path, monkeypatch,
                                                              error: str) -> None:
    """A torchvision whose compiled extension cannot load gives one line naming the mismatch."""
    import sys

    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ModelError) as info:
        create_model("tv:resnet18")
    message = str(info.value)
    assert "cannot load" in message and "built for another torch" in message
    assert torch.__version__ in message and "\n" not in message


def test_register_model_custom_and_duplicate() -> None:
    from aswl.models import registry

    @register_model("_test_tiny", input_shape=(1, 4, 4))
    def tiny(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(16, num_classes))

    try:
        assert "_test_tiny" in list_models()
        assert default_input_shape("_test_tiny") == (1, 4, 4)
        assert create_model("_test_tiny", 3, (1, 4, 4))(torch.randn(2, 1, 4, 4)).shape == (2, 3)
        with pytest.raises(ModelError):
            register_model("_test_tiny")(lambda num_classes, input_shape: nn.Identity())
    finally:
        registry._REGISTRY.pop("_test_tiny", None)


def test_mobilenetv2_cifar_width_and_channel_mode() -> None:
    """The compact MobileNetV2: 32x32 and 28x28 inputs, a width multiplier, depthwise convs
    that channel mode follows (coupled to their expansion), and a refused width."""
    torch.manual_seed(0)
    model = create_model("mobilenetv2_cifar", num_classes=10, input_shape=(1, 28, 28))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    half = create_model("mobilenetv2_cifar", num_classes=10, input_shape=(3, 32, 32), width=0.5)
    assert n_params(half) < 0.6 * n_params(create_model("mobilenetv2_cifar", num_classes=10))
    assert any(m.groups > 1 for m in half.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ModelError, match="width"):
        create_model("mobilenetv2_cifar", num_classes=10, width=0)
    pytest.importorskip("torch_pruning")
    import aswl

    method = aswl.create_method("l1_filter", half, total_steps=4, structure="channel",
                                example_inputs=torch.zeros(1, 3, 32, 32), target_sparsity=0.5)
    method.finalize()
    thin = method.export()
    assert thin(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert 0.45 < method.global_sparsity() < 0.6
