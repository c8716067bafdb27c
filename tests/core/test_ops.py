import pytest
import torch

from camlens.core.ops import fuse, minmax_normalize, upsample


def test_minmax_per_map_constant_and_nan():
    m = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]]])  # (1, 2, 2, 2)
    out = minmax_normalize(m)
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))  # constant: zeros, not NaN
    assert torch.isnan(minmax_normalize(torch.tensor([[[[1.0, float("nan")]]]]))).all()  # NaN is not hidden


def test_upsample_modes_by_rank():
    one = upsample(torch.tensor([[[0.0, 1.0]]]), (4,))
    assert torch.allclose(one, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))
    vol = torch.arange(8.0).view(1, 1, 2, 2, 2)
    assert upsample(vol, (4, 4, 4)).shape == (1, 1, 4, 4, 4)
    same = torch.rand(1, 1, 3, 3)
    assert upsample(same, (3, 3)) is same
    with pytest.raises(ValueError, match="cannot upsample"):
        upsample(torch.rand(1, 1, 3, 3), (3,))


def test_fuse():
    a, b = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5])
    assert torch.equal(fuse([a, b], "mean"), torch.tensor([0.5, 0.75]))
    assert torch.equal(fuse([a, b], "max"), torch.tensor([1.0, 1.0]))
    assert torch.equal(fuse([a, b], "product"), torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="fuse='sum'"):
        fuse([a], "sum")
