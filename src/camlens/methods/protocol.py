"""What every registered method is: the :class:`Explainer` protocol."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.targets import TargetSpec
from camlens.methods.base import CAMResult

__all__ = ["CAPABILITIES", "FAMILIES", "Explainer"]

#: the capability flags every method class declares, as class attributes of type ``bool``.
CAPABILITIES = ("uses_gradients", "input_sized", "accepts_reshape", "accepts_postprocess", "accepts_eigen_smooth")

#: the model families a method may declare in its ``families`` class attribute (a tuple of these, in this order):
#: convolutional classifiers, vision transformers on (N, T, C) tokens, Swin-style channels-last
#: (N, h, w, C) stages, detectors (:class:`camlens.DetectionTarget`) and segmenters
#: (:class:`camlens.SegmentationTarget`). ``docs/methods_table.md`` is made from them.
FAMILIES = ("cnn", "vit", "swin", "detection", "segmentation")


@runtime_checkable
class Explainer(Protocol):
    """A CAM method: built from a model and layers, called on a batch, returning a :class:`CAMResult`.

    Every class in :data:`camlens.methods.METHODS` satisfies it. Its
    capabilities are class attributes, so a caller can read them from the
    class before building one:

    - ``uses_gradients``: the method runs a backward pass;
    - ``input_sized``: its maps live at the input's resolution (guided
      backpropagation, Guided Grad-CAM, FullGrad), not at a layer's;
    - ``accepts_reshape``: it takes ``reshape=`` for token or channels-last layers;
    - ``accepts_postprocess``: it takes ``relu=``, ``normalize=`` and ``upsample=``;
    - ``accepts_eigen_smooth``: it takes ``eigen_smooth=True`` (the first principal
      component of the weighted activations instead of their channel sum);
    - ``families``: the model families of :data:`FAMILIES` it applies to.

    Example:
        >>> import torch, camlens
        >>> from camlens.methods.protocol import Explainer
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> isinstance(camlens.GradCAM(model, "0"), Explainer), camlens.GradCAM.input_sized
        (True, False)
    """

    name: ClassVar[str]
    uses_gradients: ClassVar[bool]
    input_sized: ClassVar[bool]
    accepts_reshape: ClassVar[bool]
    accepts_postprocess: ClassVar[bool]
    accepts_eigen_smooth: ClassVar[bool]
    families: ClassVar[tuple[str, ...]]
    #: the (unwrapped) model explained.
    model: nn.Module
    #: the layers explained, by name (empty until chosen for ``layers=None``).
    layers: dict[str, nn.Module]

    def __init__(self, model: nn.Module, layers: LayerSpec | Iterable[LayerSpec] | None = ..., **options: Any) -> None:
        """Bind the method to ``model`` and ``layers`` with its options."""

    def __call__(self, x: Tensor, target: TargetSpec = None, *, top_k: int | None = None) -> CAMResult:
        """Explain ``x`` for ``target`` or the ``top_k`` classes."""
        ...
