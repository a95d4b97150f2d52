"""A lone CPU input's convolutions run on oneDNN (core/model/lone_copy.py), with the same outputs and gradients."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.profiler import profile

from napari_segxai.core.model.card import build_network, default_model_card
from napari_segxai.core.model.lone_copy import LoneCopyConvolution, prefer_onednn, torch_kernels

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def tiny_network() -> torch.nn.Module:
    """Small 3D convolutions of every kind the patch meets: 3^3, 'same', reflect-padded, grouped, 1x1, strided."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(2, 6, 3, padding=1),
        torch.nn.InstanceNorm3d(6, affine=True),
        torch.nn.ReLU(),
        torch.nn.Conv3d(6, 6, 3, padding="same"),
        torch.nn.Conv3d(6, 6, 3, padding=1, padding_mode="reflect"),
        torch.nn.Conv3d(6, 6, 3, padding=1, groups=2),
        torch.nn.Conv3d(6, 6, 1),
        torch.nn.Conv3d(6, 3, 3, stride=2, padding=1),
    ).eval()


#: A lone input whose stride-1 calls are large enough for oneDNN (FEWEST_OUTPUT_VOXELS).
LONE = (1, 2, 13, 12, 12)


def kernels(network: torch.nn.Module, x: torch.Tensor, grad: bool) -> set[str]:
    """The convolution kernels torch ran for one pass (and its backward when ``grad``)."""
    with profile() as prof:
        if grad:
            x = x.clone().requires_grad_(True)
            network(x).sum().backward()
        else:
            with torch.inference_mode():
                network(x)
    return {e.key for e in prof.key_averages() if "conv" in e.key and e.key.startswith("aten::")}


@pytest.fixture
def pair():
    plain = tiny_network()
    return plain, prefer_onednn(copy.deepcopy(plain))


def test_outputs_and_gradients_equal_torchs(pair):
    plain, patched = pair
    x = torch.randn(LONE)
    with torch.inference_mode():
        torch.testing.assert_close(patched(x), plain(x), rtol=1e-4, atol=1e-5)
    grads = []
    for network in (plain, patched):
        xg = x.clone().requires_grad_(True)
        network(xg)[:, 1].square().sum().backward()
        grads.append((xg.grad, [p.grad.clone() for p in network.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_second_order_gradients_equal_torchs(pair):
    """LRP's normalised start differentiates a gradient again."""
    plain, patched = pair
    x = torch.randn(LONE)
    results = []
    for network in (plain, patched):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(network(xg).sum(), xg, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), xg)
        results.append(gg)
    torch.testing.assert_close(results[1], results[0], rtol=1e-3, atol=1e-5)


@pytest.fixture
def threads():
    """torch's thread setter for one test; the process's count is restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def convolution(*args, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(*args, **kwargs)).eval()


def test_lone_inputs_run_on_onednn_and_batches_as_before(threads):
    threads(2)
    plain = convolution(2, 6, 3, padding=1)
    patched = prefer_onednn(copy.deepcopy(plain))
    lone = torch.randn(1, 2, 12, 12, 12)
    assert "aten::slow_conv3d_forward" in kernels(plain, lone, grad=False)  # what the patch is for
    for grad in (False, True):
        ran = kernels(patched, lone, grad)
        assert "aten::slow_conv3d_forward" not in ran and "aten::mkldnn_convolution" in ran, (grad, ran)
    batch = torch.randn(2, 2, 12, 12, 12)
    assert kernels(patched, batch, grad=False) == kernels(plain, batch, grad=False)


@pytest.mark.parametrize("layer, side, grad", [
    ((2, 6, 3), 11, False),                 # 1,331 output voxels: under FEWEST_OUTPUT_VOXELS
    ((2, 6, 1), 16, False),                 # a 1x1 kernel
    ((2, 6, 1), 16, True),
    ((2, 6, 3, 2), 24, True),               # strided, with gradients
])
def test_calls_where_native_was_faster_stay_native(threads, layer, side, grad):
    threads(2)
    conv = prefer_onednn(convolution(*layer))
    ran = kernels(conv, torch.randn(1, 2, side, side, side), grad)
    assert "aten::slow_conv3d_forward" in ran and "aten::mkldnn_convolution" not in ran, ran


def test_a_strided_call_without_gradients_runs_on_onednn(threads):
    threads(2)
    conv = prefer_onednn(convolution(2, 6, 3, 2))
    ran = kernels(conv, torch.randn(1, 2, 24, 24, 24), grad=False)   # 1,728 output voxels
    assert "aten::slow_conv3d_forward" not in ran and "aten::mkldnn_convolution" in ran, ran


def test_hooks_see_the_lone_input_and_output(pair):
    _, patched = pair
    seen = []
    conv = patched[0]
    conv.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    conv.register_forward_hook(lambda _m, _args, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        patched(torch.randn(LONE))
    assert seen == [LONE, (1, 6) + LONE[2:]]


def test_copies_and_pickles_keep_their_own_convolutions(pair):
    _, patched = pair
    for twin in (copy.deepcopy(patched), pickle.loads(pickle.dumps(patched))):
        for mine, theirs in zip(twin.modules(), patched.modules()):
            if isinstance(mine, torch.nn.Conv3d):
                assert isinstance(mine._conv_forward, LoneCopyConvolution) and mine._conv_forward.conv is mine
                assert mine is not theirs
        x = torch.randn(LONE)
        with torch.no_grad():
            torch.testing.assert_close(twin(x), patched(x))


def test_torch_kernels_undoes_it(pair):
    _, patched = pair
    lone = torch.randn(1, 2, 12, 12, 12)
    assert "aten::slow_conv3d_forward" in kernels(torch_kernels(patched), lone, grad=False)
    assert not any("_conv_forward" in vars(m) for m in patched.modules())


def test_built_networks_are_patched_once():
    network = build_network(default_model_card(), "cpu")
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(isinstance(m._conv_forward, LoneCopyConvolution) for m in convs)
    before = [m._conv_forward for m in convs]
    prefer_onednn(network)
    assert [m._conv_forward for m in convs] == before
