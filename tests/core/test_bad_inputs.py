"""Bad input reaches the engine: a camlens error naming the value and the fix, never a traceback from torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens._util.device import select_device
from camlens.cli import main
from camlens.errors import InputError, TargetError
from camlens.methods.base import check_input
from camlens.methods.eigencam import first_component
from testmodels import GapNet, hook_count, seeded

#: the methods for CNNs (this file's GapNet); LeGrad (ViTs only) has the same check in tests/methods/test_legrad.py
NAMES = sorted(n for n, cls in camlens.METHODS.items() if "cnn" in cls.families)


def make(name: str, model: nn.Module) -> camlens.BaseCAM:
    cls = camlens.get_method(name)
    if name in ("fullgrad", "guided-backprop"):
        return cls(model)
    return cls(model, "features.2")


class Total(nn.Module):
    """Returns one number for the whole batch (a loss, say): a 0-d tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).sum()


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "ablationcam", "eigencam", "auto"])
def test_a_model_returning_a_0d_tensor(name: str) -> None:
    model = Total()
    cam = camlens.GradCAM(model) if name == "auto" else camlens.get_method(name)(model, "conv")
    with pytest.raises(TargetError, match=r"model's output is a 0-d tensor .*return \(N, classes\) scores"):
        cam(torch.randn(2, 3, 8, 8))
    assert hook_count(model) == 0


@pytest.mark.parametrize("on_meta", ["x", "both"])
def test_a_model_on_the_meta_device(on_meta: str) -> None:
    model = GapNet().to("meta")
    x = torch.randn(2, 3, 8, 8, device="meta" if on_meta == "both" else "cpu")
    for cam in (camlens.GradCAM(model, "features.2"), camlens.GradCAM(model)):
        with pytest.raises(InputError, match=r"GapNet is on the meta device.*model\.to_empty\(device='cpu'\)"):
            cam(x)


def test_an_input_on_the_meta_device() -> None:
    model = nn.Sequential(nn.Identity())  # no parameters: only x's device can be checked
    with pytest.raises(InputError, match=r"x is on the meta device .*pass a batch of real images"):
        camlens.GradCAM(model, "0")(torch.randn(1, 3, 4, 4, device="meta"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_input_names_the_images_for_every_method(name: str, bad: float) -> None:
    model = seeded(GapNet)
    x = torch.randn(4, 3, 8, 8)
    x[1, 0, 2, 3] = bad
    x[3, 2, 0, 0] = bad
    message = r"x holds NaN or infinite values in image\(s\) 1, 3 of the batch of 4; .*drop or repair those images"
    with pytest.raises(InputError, match=message):
        make(name, model)(x)
    assert hook_count(model) == 0


def test_many_bad_images_are_summed_up() -> None:
    x = torch.full((12, 3, 4, 4), float("nan"))
    first_ten = ", ".join(map(str, range(10)))
    with pytest.raises(InputError, match=rf"image\(s\) {first_ten}, \.\.\. \(12 in all\) of the batch of 12"):
        camlens.GradCAM(seeded(GapNet), "features.2")(x)


def test_finite_inputs_pass_the_check() -> None:
    model = seeded(GapNet)
    cam = camlens.GradCAM(model, "features.2")
    assert torch.isfinite(cam(torch.randn(2, 3, 8, 8)).map).all()
    check_input(model, torch.full((4, 3, 8, 8), 3e38))  # finite values whose sum overflows: the exact check
    check_input(seeded(GapNet).half(), torch.full((4, 3, 8, 8), 6e4, dtype=torch.float16))  # a half model
    # integer pixels are refused with the conversion to make: tests/core/test_inputs.py
    check_input(model, torch.zeros(0, 3, 8, 8))
    with pytest.raises(InputError, match=r"image\(s\) 1 of the batch of 2"):
        check_input(model, torch.tensor([[1.0], [float("inf")]], dtype=torch.float16))


def test_eigencam_on_features_the_model_made_non_finite() -> None:
    f = torch.randn(3, 4, 5, 5)
    f[2, 1, 2, 2] = float("inf")
    with pytest.raises(InputError, match=r"SVD failed: the features of image\(s\) \[2\] hold NaN or infinite values"):
        first_component(f, 2)


class Overflow(nn.Module):
    """x * 1e38 * 1e38: infinite features from a finite input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1e38 * 1e38


def test_eigencam_on_a_layer_whose_output_overflows() -> None:
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)]
    model = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Overflow(), *head))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    with pytest.raises(InputError, match=r"SVD failed: the features of image\(s\) \[0, 1\] hold NaN or infinite"):
        camlens.EigenCAM(model, "1")(torch.rand(2, 3, 6, 6) + 1.0)
    assert hook_count(model) == 0


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("bogus", r"device='bogus' is not a device; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'"),
        ("meta", r"device='meta': the meta device holds shapes but no data.*use device='auto', 'cpu' or 'cuda'"),
        ("xpu", r"device='xpu': no 'xpu' device is available here; use 'auto', 'cpu'"),
        ("lazy", r"device='lazy': no 'lazy' device is available here"),
    ],
)
def test_select_device_refuses(device: str, message: str) -> None:
    if device == "xpu" and getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
        pytest.skip("this machine has an XPU")
    with pytest.raises(InputError, match=message):
        select_device(device)
    with pytest.raises(InputError, match=message):
        select_device(torch.device(device)) if device != "bogus" else select_device(device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to count its devices")
def test_select_device_refuses_a_cuda_index_past_the_last() -> None:
    n = torch.cuda.device_count()
    with pytest.raises(InputError, match=rf"device='cuda:{n}' but this machine has {n} CUDA device\(s\)"):
        select_device(f"cuda:{n}")


@pytest.mark.parametrize("device", ["bogus", "meta"])
def test_cli_device_bogus_is_one_line_and_exit_1(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", "testmodels:small_resnet", "--device", device]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"camlens layers: error: InputError: device={device!r}")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
