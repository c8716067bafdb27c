"""A photo or dataset of the wrong channel count: every command says the flag or data that fixes it, not the
tensor call a Python caller would make (``x.expand(...)``)."""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from camlens.cli import main
from camlens.core.inputs import check_image_batch
from camlens.errors import ChannelError, InputError
from testmodels import write_factory

FACTORY = """
import torch, torchvision

def build():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10)
"""
HEAD = ("ChannelError: the images reach ResNet's first convolution 'conv1' with 1 channel (grayscale), but it takes "
        "3 channels (RGB): ")  # fmt: skip


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "camera.jpg"
    Image.fromarray(skdata.camera(), "L").save(path)
    return path


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    return write_factory(tmp_path_factory.mktemp("factory"), FACTORY, name="gray_models.py")


def _error(argv, capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "x.expand" not in err and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    return line


def test_a_grayscale_photo_made_by_channels_1_on_resnet18_says_to_pass_channels_3(camera, tmp_path, capsys):
    argv = ["explain", "torchvision:resnet18", "--weights", "none", str(camera), "--channels", "1", "--mean", "0.5",
            "--std", "0.25", "--size", "64", "--out", str(tmp_path / "o"), "--device", "cpu"]  # fmt: skip
    assert _error(argv, capsys) == (f"camlens explain: error: {HEAD}--channels 1 converts the images to 1 channel "
                                    "(grayscale): pass --channels 3, or leave --channels out for the model's own "
                                    "preprocessing")  # fmt: skip
    assert main(argv[:5] + argv[11:]) == 0  # without --channels: the same photo, converted to RGB, is explained
    assert (tmp_path / "o" / "camera.png").is_file()


def test_dataset_items_used_as_they_are_say_to_give_other_data(factory, camera, tmp_path, capsys):
    argv = ["explain", factory, "--index", "0", "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert _error(argv, capsys) == (f"camlens explain: error: {HEAD}--index items of --data fashion-mnist:test are "
                                    "used as they are: give --data whose images have 3 channel(s), or explain image "
                                    "files")  # fmt: skip


def test_explain_dataset_and_evaluate_say_their_own_fixes(factory, tmp_path, capsys):
    argv = ["explain-dataset", "--model", factory, "--out", str(tmp_path / "d"), "--limit", "4", "--no-progress",
            "--device", "cpu"]  # fmt: skip
    assert _error(argv, capsys) == (f"camlens explain-dataset: error: {HEAD}pass --channels 3: an image folder is "
                                    "read through the preprocessing, which converts every image, and so is a dataset "
                                    "of tensors once a preprocessing flag is given; or give --data whose images have "
                                    "3 channel(s)")  # fmt: skip
    assert main([*argv, "--channels", "3"]) == 0  # the fix it names works
    argv = ["evaluate", factory, "--data", "fashion-mnist:test", "--n-images", "4", "--seeds", "0", "--methods",
            "gradcam", "--steps", "2", "--no-sanity", "--no-figures", "--out", str(tmp_path / "e"), "--device", "cpu"]
    assert _error(argv, capsys) == (f"camlens evaluate: error: {HEAD}a folder of images is read through the "
                                    "preprocessing, which converts every image: pass --channels 3; a dataset of "
                                    "tensors is used as it is: give --data whose images have 3 channel(s)")


def test_layers_says_the_input_shape_to_give(capsys):
    argv = ["layers", "torchvision:resnet18", "--weights", "none", "--input-shape", "1,64,48"]
    assert _error(argv, capsys) == f"camlens layers: error: {HEAD}pass --input-shape 3,64,48 (one input's shape)"


def test_the_engine_error_holds_both_counts_and_survives_pickling():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    with pytest.raises(ChannelError) as e:
        check_image_batch(model, torch.rand(2, 1, 8, 8))
    assert (e.value.given, e.value.expected, e.value.where) == (1, 3, "Sequential's first convolution '0'")
    assert isinstance(e.value, InputError) and "x.expand(-1, 3, *x.shape[2:])" in str(e.value)
    back = pickle.loads(pickle.dumps(e.value))  # a DataLoader worker or another rank hands it over pickled
    assert (str(back), back.given, back.expected, back.where) == (str(e.value), 1, 3, e.value.where)
