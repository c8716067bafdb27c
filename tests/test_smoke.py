import torch
from torch import nn

import camlens


def test_gradcam_runs_on_a_tiny_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    result = camlens.GradCAM(model, layers="0")(torch.rand(2, 1, 6, 6))
    assert result.maps["0"].shape == (2, 6, 6)
    assert float(result.maps["0"].max()) <= 1.0
