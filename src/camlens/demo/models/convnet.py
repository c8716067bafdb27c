"""The tutorial's ConvNet: three 3x3 'same' convolutions (48, 32, 16), ReLU, flatten, linear."""

from __future__ import annotations

from torch import Tensor, nn

from camlens.demo.models.registry import register_model

__all__ = ["ConvNet"]


@register_model("convnet")
class ConvNet(nn.Module):
    """Layer for layer the tutorial's network; its layers are named for the engine.

    ``seq.0``, ``seq.2``, ``seq.4`` are the first, second and last of the three
    convolutions (outputs ``(N, 48|32|16, 28, 28)``); ``seq.7`` is the linear head.

    Args:
        in_channels: image channels (1 for Fashion-MNIST).
        num_classes: output classes.
        image_size: input height = width (28).
    """

    #: the conv layers, first to last, as the engine names them.
    conv_layers = ("seq.0", "seq.2", "seq.4")

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            nn.Conv2d(in_channels, 48, kernel_size=3, padding="same"),
            nn.ReLU(),
            nn.Conv2d(48, 32, kernel_size=3, padding="same"),
            nn.ReLU(),
            nn.Conv2d(32, 16, kernel_size=3, padding="same"),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * image_size * image_size, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)
