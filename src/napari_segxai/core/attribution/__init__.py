"""Attribution engine: per-class relevance maps for segmentation networks (numpy/torch/captum only).

Each method is one module registered by name; :func:`explain` runs one on a network, an input
(1, C, *spatial) and a :class:`Target`, and returns a :class:`Relevance`.
"""

from .base import (
    DEFAULT_METHOD,
    AttributionMethod,
    Parameter,
    Relevance,
    available_methods,
    explain,
    get_method,
    method_class,
    register,
)
from .targets import Target, predicted_target, region_target, voxel_target
from .windows import window_slices, windowable_methods, windowed_attribute

from .explain_case import explain_case  # noqa: E402
from .slicewise import SliceWise  # noqa: E402

# one module per method; importing them fills the registry in this order (fast methods first)
from . import saliency, gradient_x_input, smoothgrad, integrated_gradients, grad_cam, occlusion  # noqa: E402,F401
from . import guided_backprop, deconvolution, deeplift, lrp, kernel_shap, meaningful_perturbation  # noqa: E402,F401
from . import modality_shapley  # noqa: E402,F401

__all__ = [
    "DEFAULT_METHOD",
    "AttributionMethod",
    "Parameter",
    "Relevance",
    "SliceWise",
    "Target",
    "available_methods",
    "explain",
    "explain_case",
    "get_method",
    "method_class",
    "predicted_target",
    "region_target",
    "register",
    "voxel_target",
    "window_slices",
    "windowable_methods",
    "windowed_attribute",
]
