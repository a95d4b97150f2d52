"""Sliding-window relevance: window by window on the grid equals the relevance of the blended whole-volume model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from napari_segxai.core import progress as core_progress
from napari_segxai.core.attribution import (
    get_method,
    predicted_target,
    window_slices,
    windowable_methods,
    windowed_attribute,
)

ROI = (16, 16, 16)


class SlidingWindowModel(torch.nn.Module):
    """The whole-volume model: MONAI's Gaussian-blended sliding window over a network (differentiable)."""

    def __init__(self, net, overlap=0.25):
        super().__init__()
        self.net, self.overlap = net, overlap

    def forward(self, x):
        return sliding_window_inference(x, ROI, 1, self.net, overlap=self.overlap, mode="gaussian")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = UNet(3, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1, norm="batch").eval()
    x = torch.randn(1, 2, 28, 20, 16, generator=torch.Generator().manual_seed(5))
    whole = SlidingWindowModel(net)
    with torch.no_grad():
        logits = whole(x)
    target = predicted_target(logits, [c for c in range(3) if (logits[0].argmax(0) == c).any()])
    return net, whole, x, target


def test_windows_are_monais():
    windows = window_slices((28, 20, 16), ROI, 0.25)
    assert len(windows) == 2 * 2 * 1  # starts 0, 12 along 28; 0, 4 along 20
    assert all(w[0].stop - w[0].start == 16 for w in windows) and windows[-1][0].stop == 28
    assert window_slices((8, 20), (16, 16), 0.5)[0][0] == slice(0, 8)  # the window is cut to the grid


@pytest.mark.parametrize("name, params", [
    ("saliency", {}),
    ("gradient_x_input", {}),
    ("integrated_gradients", {"steps": 4, "baseline": "blurred", "blur_sigma": 2.0}),
    ("integrated_gradients", {"steps": 4, "baseline": "minimum"}),
    ("guided_backprop", {}),
    ("deconvolution", {}),
    # the noise is drawn once on the whole grid and cropped: the whole-volume run draws it in one batch too
    ("smoothgrad", {"n_samples": 3, "sigma": 0.2, "batch_size": 3}),
    ("smoothgrad", {"base": "gradient_x_input", "n_samples": 2, "batch_size": 2, "seed": 4}),
])
def test_windowed_equals_whole_volume(setup, name, params):
    net, whole, x, target = setup
    method = get_method(name, **params)
    windowed = windowed_attribute(method, net, x, target, roi_size=ROI, overlap=0.25)
    reference = method.attribute(whole, x, target)
    torch.testing.assert_close(windowed, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))


def test_windowed_deeplift_sums_to_the_blended_difference(setup):
    net, whole, x, target = setup
    windowed = windowed_attribute("deeplift", net, x, target, roi_size=ROI)
    with torch.no_grad():
        difference = target.scalars(whole(x))[0] - target.scalars(whole(torch.zeros_like(x)))[0]
    torch.testing.assert_close(windowed.flatten(1).sum(1), difference, rtol=1e-3, atol=1e-3)


def test_windows_that_miss_the_target_are_skipped(setup):
    net, _, x, _ = setup
    region = np.zeros(x.shape[2:], bool)
    region[2, 2, 2] = True
    from napari_segxai.core.attribution import region_target

    target = region_target(region, 1, 3)
    calls = []
    hook = net.register_forward_hook(lambda *args: calls.append(1))
    try:
        relevance = windowed_attribute("saliency", net, x, target, roi_size=ROI)
    finally:
        hook.remove()
    assert len(calls) == 1  # only the first window holds voxel (2, 2, 2)
    assert relevance[:, :, 16:].abs().max() == 0


def test_windowed_refuses_non_additive_methods_and_reports_progress(setup):
    net, _, x, target = setup
    assert set(windowable_methods()) >= {"saliency", "integrated_gradients", "deeplift"}
    assert "occlusion" not in windowable_methods()
    with pytest.raises(ValueError, match="not additive over windows"):
        windowed_attribute("occlusion", net, x, target, roi_size=ROI)
    for params in ({"variant": "vargrad"}, {"variant": "smoothgrad_sq"}, {"base": "integrated_gradients"}):
        assert not get_method("smoothgrad", **params).windowable  # squares, or a baseline rebuilt per copy
        with pytest.raises(ValueError, match="not additive over windows"):
            windowed_attribute(get_method("smoothgrad", **params), net, x, target, roi_size=ROI)
    seen = []
    windowed_attribute("saliency", net, x, target, roi_size=ROI, progress=lambda d, t: seen.append((d, t)))
    done = [d / t for d, t in seen]
    assert done[-1] == 1.0 and done == sorted(done)
    # the bar moves inside each window (one step per class), not only between the windows (4 here)
    assert len(set(done)) > 4 + 1
    with pytest.raises(core_progress.Cancelled):
        windowed_attribute("saliency", net, x, target, roi_size=ROI, should_cancel=lambda: True)
    with pytest.raises(ValueError, match="overlap"):
        windowed_attribute("saliency", net, x, target, roi_size=ROI, overlap=1.0)
