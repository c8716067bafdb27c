"""Convolutions on tiny maps as one matrix product, for the optimized copy of :mod:`camlens.methods._rerun`.

A convolution is a linear map from its input ``(C_in, H, W)`` to its output
``(C_out, H', W')``. Written as a dense matrix it costs ``C_in*H*W * C_out*H'*W'``
multiply-adds per row; as a convolution, ``C_out*H'*W' * C_in/groups * kh*kw``.
On a map smaller than the kernel the dense form does less arithmetic: on a
2x2 map a 3x3 convolution with padding 1 reaches only 4 of its 9 taps, the
others multiply the zero padding, and on a 1x1 map only the centre tap. The
dense form is also a plain matrix product, which runs near the CPU's SGEMM
rate where oneDNN's convolution on such maps does not (benchmark ResNet,
``layer4`` at 2x2, 256 channels, 192 rows, 2 threads: 14.0 ms as a oneDNN
convolution, 4.8 ms as a matrix product with the layout conversions; at 1x1,
5.0 ms and 0.3 ms; at 3x3, where both forms do the same arithmetic, the
convolution is faster, 16.5 ms against 22.2 ms).

So a convolution whose dense form does at most half the convolution's
arithmetic (``2 * H*W * groups <= kh*kw``) and whose matrix fits
:data:`MAX_MATRIX_BYTES` is replaced in the copy by :class:`DenseSmallConv`.
The matrix is the convolution's response to every one-hot input, so it is the
same linear map (any padding mode, stride, dilation or grouping); the sums run
in a different order, so values agree up to float rounding (measured 3e-6 on
the 2x2 map above, well inside the copy's 1e-4 check).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, fx, nn

__all__ = ["MAX_MATRIX_BYTES", "DenseSmallConv", "densify_small_convs"]

#: the largest dense matrix a replaced convolution may hold (64 MiB: 4096 x 4096 floats).
MAX_MATRIX_BYTES = 64 * 2**20


class DenseSmallConv(nn.Module):
    """A 2-D convolution run as one matrix product on inputs of one shape ``(C_in, H, W)``.

    Inputs of any other shape go through the convolution itself.

    Shapes: input ``(N, C_in, H, W)``, matrix ``(C_in*H*W, C_out*H'*W')``,
    output ``(N, C_out, H', W')``.
    """

    matrix: Tensor
    dense_bias: Tensor

    def __init__(self, conv: nn.Conv2d, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.in_shape = tuple(in_shape)
        weight = conv.weight.detach()
        with torch.no_grad():
            eye = torch.eye(math.prod(self.in_shape), dtype=weight.dtype, device=weight.device)
            response = conv._conv_forward(eye.view(-1, *self.in_shape), weight, None)  # (C_in*H*W, C_out, H', W')
        self.out_shape = tuple(response.shape[1:])
        bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(self.out_shape[0])
        self.register_buffer("matrix", response.flatten(1).contiguous())
        self.register_buffer("dense_bias", bias[:, None, None].expand(self.out_shape).flatten().contiguous())

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            return self.conv(x)
        return torch.addmm(self.dense_bias, x.reshape(len(x), -1), self.matrix).view(len(x), *self.out_shape)


def worth_densifying(conv: nn.Module, in_shape: tuple[int, ...]) -> bool:
    """Whether ``conv`` on inputs ``(C_in, H, W)`` does at most half its arithmetic as a dense matrix, which fits."""
    if type(conv) is not nn.Conv2d or len(in_shape) != 3 or isinstance(conv.padding, str):
        return False
    c_in, h, w = in_shape
    kh, kw = conv.kernel_size
    if 2 * h * w * conv.groups > kh * kw:
        return False
    sh, sw = conv.stride
    (dh, dw), (ph, pw) = conv.dilation, conv.padding
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return out_h > 0 and out_w > 0 and c_in * h * w * conv.out_channels * out_h * out_w * 4 <= MAX_MATRIX_BYTES


def densify_small_convs(gm: fx.GraphModule, x1: Tensor) -> int:
    """Replace, in place, the convolutions of ``gm`` that :func:`worth_densifying` on ``x1``'s shapes.

    ``x1`` is one example row; its forward pass through ``gm`` gives each
    convolution's input shape. Returns how many were replaced.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(x1)
    modules = dict(gm.named_modules())
    replaced = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        meta = node.args[0].meta.get("tensor_meta")
        shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else ()
        conv = modules[node.target]
        if worth_densifying(conv, shape):
            parent, _, name = node.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, name, DenseSmallConv(conv, shape))
            replaced += 1
    return replaced
