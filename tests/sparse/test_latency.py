"""Channel mode's latency budget: the measured table, its cache, its refusals, and every
channel method under it (a fake timer everywhere but the one slow test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import aswl
from aswl.methods import ConfigError
from aswl.methods.guards import MethodStateError
from aswl.sparse import latency
from aswl.sparse.channel_cost import round_count
from aswl.sparse.latency import LatencyTable, load_latency_table, profile_latency

pytest.importorskip("torch_pruning")


class Net(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.head(x.mean((2, 3)))


class FakeTimer:
    """ms = 0.1 + out * in / 100 per grid point (counts), and how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fns: dict, repeats: int, device: torch.device) -> dict:
        self.calls += 1
        return {(cout, cin): 0.1 + cout * cin / 100 for cout, cin in fns}


@pytest.fixture
def timer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeTimer:
    fake = FakeTimer()
    monkeypatch.setattr(latency, "time_points", fake)
    monkeypatch.setenv("ASWL_CACHE", str(tmp_path / "cache"))
    return fake


def example(batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, 3, 8, 8)


def test_table_interpolates_exactly_at_grid_points_and_linearly_between() -> None:
    table = LatencyTable({"multiple": 1}, {"a": {"out": [0.25, 0.5, 1.0], "in": [0.5, 1.0],
                                                 "ms": [[1.0, 2.0], [3.0, 5.0], [4.0, 9.0]]}})
    t = torch.tensor
    for i, out in enumerate([0.25, 0.5, 1.0]):
        for j, inp in enumerate([0.5, 1.0]):
            got = table.interpolate("a", t([out]), t([inp]))
            assert float(got) == pytest.approx(table.layers["a"]["ms"][i][j])
    assert float(table.interpolate("a", t([0.375]), t([0.5]))) == pytest.approx(2.0)
    assert float(table.interpolate("a", t([0.5]), t([0.75]))) == pytest.approx(4.0)
    # bilinear: the mean of the four corners at the cell's centre
    assert float(table.interpolate("a", t([0.75]), t([0.75]))) == pytest.approx(21 / 4)
    # below the grid: the first segment extended, never negative; above: the last point
    assert float(table.interpolate("a", t([0.125]), t([0.5]))) == pytest.approx(0.0)
    assert float(table.interpolate("a", t([0.2]), t([0.5]))) == pytest.approx(0.6)
    batched = table.interpolate("a", t([[0.25, 1.0]]), t([[0.5, 1.0]]))
    assert batched.shape == (1, 2) and batched[0].tolist() == pytest.approx([1.0, 9.0])


def test_all_layers_interpolated_at_once_equal_one_by_one() -> None:
    """The budget solver's one-pass lookup (Grids) gives the table's values layer by layer,
    over grids of different lengths (a depthwise or fixed side has one point), below, on and
    above the grid."""
    from aswl.sparse.latency import Grids

    layers = {"a": {"out": [0.25, 0.5, 1.0], "in": [0.5, 1.0],
                    "ms": [[1.0, 2.0], [3.0, 5.0], [4.0, 9.0]]},
              "b": {"out": [0.125, 0.25, 0.5, 0.75, 1.0], "in": [1.0],
                    "ms": [[0.5], [1.0], [2.5], [2.6], [4.0]]},
              "c": {"out": [1.0], "in": [0.25, 1.0], "ms": [[1.0, 7.0]]}}
    table = LatencyTable({}, layers)
    torch.manual_seed(0)
    out, inp = torch.rand(4, 5, 3, dtype=torch.float64) * 1.3, torch.rand(4, 5, 3) * 1.3
    out[0, 0], inp[0, 0] = torch.tensor([0.25, 0.5, 1.0]), torch.tensor([0.5, 1.0, 0.25])
    one_by_one = torch.stack([table.interpolate(n, out[..., i], inp[..., i])
                              for i, n in enumerate(layers)], -1)
    assert torch.equal(Grids(list(layers.values())).interpolate(out, inp), one_by_one)


def test_profile_is_cached_and_a_second_call_does_not_time(timer: FakeTimer,
                                                           tmp_path: Path) -> None:
    model = Net()
    first = profile_latency(model, example(4))
    assert timer.calls == 4  # one interleaved round per layer
    files = list((tmp_path / "cache").glob("latency-*.json"))
    assert len(files) == 1
    header = json.loads(files[0].read_text())
    assert header["batch"] == 4 and header["threads"] == torch.get_num_threads()
    assert header["device"].startswith("cpu") and header["torch"] == torch.__version__
    second = profile_latency(Net(), example(4))
    assert timer.calls == 4
    assert second.layers == first.layers
    profile_latency(model, example(4), batch=8)  # another batch: another table
    assert timer.calls == 8
    # conv2 reads conv1's 16 channels, writes 32: counts at multiples of 8
    entry = first.layers["conv2"]
    assert entry["in"] == [0.5, 1.0] and entry["out"] == [0.25, 0.5, 0.75, 1.0]
    assert entry["ms"][-1][-1] == pytest.approx(0.1 + 32 * 16 / 100)


def test_a_table_for_another_device_or_model_is_refused(timer: FakeTimer,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "gpu.json"
    profile_latency(Net(), example(), path=path)
    data = json.loads(path.read_text())
    data["device"] = "cuda: NVIDIA H100"
    path.write_text(json.dumps(data))
    names = ["conv1", "conv2", "conv3", "head"]
    table = load_latency_table(path, Net(), example(), names)  # a target device's table
    assert table.header["device"] == "cuda: NVIDIA H100"
    with pytest.raises(ConfigError, match=r"device 'cuda: NVIDIA H100' \(this run: 'cpu'\)"):
        load_latency_table(path, Net(), example(), names, device="cpu")
    with pytest.raises(ConfigError, match=r"batch 1 \(this run: 64\)"):
        load_latency_table(path, Net(), example(), names, batch=64)
    with pytest.raises(ConfigError, match=r"layer\(s\) of another shape.*conv1.*aswl profile"):
        load_latency_table(path, Net(width=8), example(), names)
    data["format"] = "aswl-latency-table/1"  # timed without the allocator warm-up
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"format 'aswl-latency-table/1'.*aswl profile"):
        load_latency_table(path, Net(), example(), names)
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_latency_table(path, Net(), example(), names)


@pytest.mark.parametrize("name", ["aswl", "l1_filter", "slimming", "group_norm"])
def test_every_channel_method_accepts_the_latency_budget(timer: FakeTimer, name: str) -> None:
    torch.manual_seed(0)
    model = Net()
    method = aswl.create_method(name, model, total_steps=8, structure="channel",
                                example_inputs=example(), budget="latency",
                                target_sparsity=0.5, mask_interval=1)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.01)
    for _ in range(8):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
        aswl.training_step(model, method, optimizer, x, y)
    method.finalize()
    removed = method.global_sparsity()
    assert 0.5 <= removed < 0.8  # the fake table's time, at least the requested share
    for group, mask in zip(method.groups, method.channel_masks.values()):
        kept = int(mask.sum())
        assert kept == round_count(kept, group.size, 8)
    thin = method.export()
    assert thin(torch.randn(2, 3, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize("name", ["aswl", "l1_filter", "slimming", "group_norm"])
@pytest.mark.parametrize("sparsity", [0.5, 0.6])
def test_the_latency_budget_is_filled_to_the_last_step_that_fits(
        timer: FakeTimer, name: str, sparsity: float) -> None:
    """Counts move in steps of 8 channels: one scale (or one threshold) stops short of the
    budget; the slack is spent until no further step of any group fits under it."""
    from aswl.sparse.channel_cost import next_count

    torch.manual_seed(0)
    model = Net()  # 16, 32, 32 channels: a step of 8 is a large share
    for module in model.modules():  # trained scales differ (slimming ranks by them)
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
    method = aswl.create_method(name, model, total_steps=8, structure="channel",
                                example_inputs=example(), budget="latency",
                                target_sparsity=sparsity)
    method.step_count = method.total_steps  # the final budget
    counts = method.channel_counts(method.channel_scores())
    sizes = method.sizes

    def kept(now: list[int]) -> float:
        return float(method.cost.kept(torch.tensor(now, dtype=torch.float64) / sizes))

    budget = method._kept_target()
    assert kept(counts) <= budget + 1e-9
    for g, group in enumerate(method.groups):
        bigger = list(counts)
        bigger[g] = next_count(counts[g], group.size, group.unit, 8)
        assert bigger[g] == counts[g] or kept(bigger) > budget  # no step left that fits
    assert 1.0 - kept(counts) / method.cost.total < sparsity + 0.15  # not far past it


def test_a_resumed_run_budgets_with_the_table_it_started_with(
        timer: FakeTimer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is in the method's state: a resume on a machine whose cache is gone (or
    times differently) keeps the run's budget; a damaged table in a checkpoint is refused."""
    torch.manual_seed(0)

    def method() -> aswl.SparseMethod:
        return aswl.create_method("l1_filter", Net(), total_steps=8, structure="channel",
                                  example_inputs=example(), budget="latency",
                                  target_sparsity=0.5)

    first = method()
    state = first.state_dict()
    monkeypatch.setenv("ASWL_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setattr(latency, "time_points",  # another machine: conv1 is 50x slower
                        lambda fns, r, d: {k: 0.1 + k[0] * k[1] / (2 if k[1] == 3 else 100)
                                           for k in fns})
    second = method()
    assert second.cost.table.layers != first.cost.table.layers
    second.load_state_dict(state)
    assert second.cost.table.layers == first.cost.table.layers
    first.step_count = second.step_count = 8
    assert second.channel_counts(second.channel_scores()) == \
        first.channel_counts(first.channel_scores())
    broken = json.loads(json.dumps(state))
    broken["latency_table"]["layers"]["conv2"]["ms"][0][0] = float("nan")
    with pytest.raises(MethodStateError, match="'conv2' has no valid grid"):
        method().load_state_dict(broken)
    del broken["latency_table"]["layers"]["conv1"]
    with pytest.raises(MethodStateError, match="latency table is incomplete"):
        method().load_state_dict(broken)


def test_per_channel_cost_is_the_tables_slope(timer: FakeTimer) -> None:
    method = aswl.create_method("aswl", Net(), total_steps=8, structure="channel",
                                example_inputs=example(), budget="latency")
    cost = method.cost
    density = torch.full((len(method.groups),), 0.75, dtype=torch.float64)
    step = 1e-3
    for g in range(len(method.groups)):
        up, down = density.clone(), density.clone()
        up[g] += step
        down[g] -= step
        slope = float(((cost._times(up) - cost._times(down)) * cost.costs).sum()) / (2 * step)
        got = float(cost.per_channel(density, method.sizes)[g])
        assert got == pytest.approx(slope / float(method.sizes[g]), rel=1e-6)


def test_timing_starts_with_a_warm_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers and models are timed after one large block is freed (glibc then serves their
    outputs from its heap, as in a serving process, not from fresh pages)."""
    from aswl.export import sparse_modules

    order: list[str] = []
    monkeypatch.setattr(sparse_modules, "warm_allocator", lambda: order.append("warm"))
    sparse_modules.interleaved_ms({"f": lambda: order.append("call")}, 2)
    assert order[0] == "warm" and order.count("call") == 5  # 3 warm-up calls, 2 timed


def test_round_count() -> None:
    assert [round_count(c, 32, 8) for c in (1, 7, 8, 11, 13, 16, 27, 29, 32)] == \
        [8, 8, 8, 8, 16, 16, 24, 32, 32]
    assert round_count(5, 12, 8) == 5  # narrower than two multiples: counts as they are
    assert round_count(29, 30, 8) == 30  # never more than the width
    assert round_count(5, 32, 1) == 5


def test_budget_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="'flops', 'params' or 'latency'"):
        aswl.create_method("l1_filter", Net(), total_steps=4, structure="channel",
                           example_inputs=example(), budget="time")
    with pytest.raises(ConfigError, match="latency_batch"):
        aswl.create_method("l1_filter", Net(), total_steps=4, structure="channel",
                           example_inputs=example(), budget="latency", latency_batch=0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*finalize")
def test_latency_budget_is_met_when_measured(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Real timing, one thread: the slimmed model against the full width, measured."""
    from aswl.export.sparse_modules import fold_batchnorm, interleaved_ms

    monkeypatch.setenv("ASWL_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Net(width=32)
        full = fold_batchnorm(Net(width=32).eval())
        x = torch.randn(32, 3, 32, 32)
        method = aswl.create_method("l1_filter", model, total_steps=4, structure="channel",
                                    example_inputs=x[:1], budget="latency",
                                    latency_batch=32, target_sparsity=0.5)
        method.finalize()
        thin = fold_batchnorm(method.export().eval())
        with torch.no_grad():
            ms = interleaved_ms({"full": lambda: full(x), "thin": lambda: thin(x)}, 30)
    finally:
        torch.set_num_threads(threads)
    requested = 1.0 / (1.0 - 0.5)
    assert ms["full"] / ms["thin"] >= 0.7 * requested  # a shared CPU: loose


def test_aswl_profile_writes_a_table_the_second_run_loads(timer: FakeTimer, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from aswl.cli import main

    out = tmp_path / "lenet5.json"
    argv = ["profile", "--model", "lenet5", "--batch", "16", "--out", str(out)]
    assert main(argv) == 0
    assert "profiled in" in capsys.readouterr().out and timer.calls == 4
    assert json.loads(out.read_text())["batch"] == 16
    assert main(argv) == 0
    assert "loaded from" in capsys.readouterr().out and timer.calls == 4
    assert main(["profile", "--model", "lenet5", "--model-arg", "width"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
