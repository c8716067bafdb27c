"""Convolutions on maps smaller than their kernel, run as one matrix product in the optimized copy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.methods import _rerun
from camlens.methods._smallmap import MAX_MATRIX_BYTES, DenseSmallConv, worth_densifying
from testmodels import bn_convnet

CONVS = {
    "3x3 pad 1": (lambda: nn.Conv2d(6, 5, 3, padding=1), (6, 2, 2)),
    "no bias, stride 2": (lambda: nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=False), (6, 2, 2)),
    "5x5 dilated on 3x1": (lambda: nn.Conv2d(4, 3, 5, padding=4, dilation=2), (4, 3, 1)),
    "reflect padding": (lambda: nn.Conv2d(6, 5, 3, padding=1, padding_mode="reflect"), (6, 2, 2)),
    "circular padding": (lambda: nn.Conv2d(6, 5, 3, padding=1, padding_mode="circular"), (6, 2, 2)),
    "2 groups on 1x1": (lambda: nn.Conv2d(6, 4, 3, padding=1, groups=2), (6, 1, 1)),
}


@pytest.mark.parametrize("name", CONVS)
def test_the_dense_form_is_the_convolution(name: str) -> None:
    make, shape = CONVS[name]
    torch.manual_seed(0)
    conv = make().eval()
    assert worth_densifying(conv, shape)
    dense = DenseSmallConv(conv, shape)
    x = torch.randn(7, *shape)
    with torch.no_grad():
        want = conv(x)
        torch.testing.assert_close(dense(x), want, rtol=1e-5, atol=1e-6)
        # the same in channels-last order, and any other shape through the convolution itself
        torch.testing.assert_close(dense(x.contiguous(memory_format=torch.channels_last)), want, rtol=1e-5, atol=1e-6)
        other = torch.randn(2, shape[0], 6, 5)
        assert torch.equal(dense(other), conv(other))
    assert dense.matrix.shape == (x[0].numel(), want[0].numel())


@pytest.mark.parametrize(
    ("conv", "shape", "worth"),
    [
        (nn.Conv2d(8, 8, 3, padding=1), (8, 2, 2), True),  # 4 of 9 taps reach the map
        (nn.Conv2d(8, 8, 3, padding=1), (8, 1, 1), True),
        (nn.Conv2d(8, 8, 3, padding=1), (8, 3, 3), False),  # the same arithmetic: the convolution is faster
        (nn.Conv2d(8, 8, 1), (8, 1, 1), False),  # a 1x1 convolution is already a matrix product
        (nn.Conv2d(8, 8, 3, padding=1, groups=8), (8, 2, 2), False),  # depthwise: the dense form does 8x more
        (nn.Conv2d(8, 8, 3, padding="same"), (8, 2, 2), False),  # string padding is made explicit first
        (nn.Conv1d(8, 8, 3, padding=1), (8, 2), False),
        (nn.Conv2d(1024, 1024, 3, padding=1), (1024, 2, 2), True),  # a 4096 x 4096 matrix: 64 MiB, just fits...
        (nn.Conv2d(1025, 1024, 3, padding=1), (1025, 2, 2), False),  # ...a 4100 x 4096 one does not
    ],
)
def test_which_convolutions_run_dense(conv: nn.Module, shape: tuple[int, ...], worth: bool) -> None:
    assert worth_densifying(conv, shape) is worth
    assert MAX_MATRIX_BYTES == 64 * 2**20


def test_score_cam_on_a_2x2_model_runs_its_convolutions_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_rerun, "MIN_ROWS_TO_BUILD", 0)
    torch.manual_seed(0)
    model = bn_convnet(size=2)
    x = torch.randn(4, 1, 2, 2)
    fast = camlens.ScoreCAM(model, "seq.2")
    plain = camlens.ScoreCAM(model, "seq.2", optimize=False)
    a, b = fast(x, target=[0, 1, 2, 3]), plain(x, target=[0, 1, 2, 3])
    assert fast.inference_copy.last_used == "optimized copy"
    dense = [n for n, m in fast.inference_copy._copy.named_modules() if isinstance(m, DenseSmallConv)]
    assert len(dense) == 3  # every convolution of the model: 3x3 kernels on 2x2 maps
    torch.testing.assert_close(a.raw["seq.2"], b.raw["seq.2"], rtol=1e-4, atol=1e-6)
    assert float(b.raw["seq.2"].abs().amax()) > 0
    assert not any(isinstance(m, DenseSmallConv) for m in model.modules())  # the model itself is untouched
