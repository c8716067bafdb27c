"""Grad-CAM with the automatic layer on timm architectures across families (issue 14, items 6 and 7).

The same checks as for torchvision (test_zoo_autolayer.explain_and_check):
finite maps in [0, 1] that differ between two images for one class, a grid
the chosen layer really outputs, the same choice for one image as for two,
no hook and no ``.grad`` left. Random weights (timm's own initialisation,
seeded; ten classes to keep the heads small), 64x64 inputs: transformers are
built for 64x64 with ``img_size=64``; LeViT, EfficientFormer and TinyViT take
only their 224x224. The families whose classifier timm initialises to zero
(MLP-Mixer, ResMLP, gMLP, Hiera, Sequencer2d) must get the automatic layer's
zero-gradient error first; the test then re-initialises the head with a
seeded normal init (std 0.02) and explains them.
"""

from __future__ import annotations

import pytest
import timm
import torch
from test_zoo_autolayer import explain_and_check, two_images

#: CNNs: any input size, no img_size argument
CNNS = [
    "resnet10t", "resnet26d", "resnetv2_50", "seresnet18", "skresnet18", "resnest14d", "res2net50_14w_8s",
    "regnetx_002", "regnety_002", "efficientnet_b0", "efficientnetv2_rw_t", "tf_efficientnetv2_b0",
    "mobilenetv3_small_050", "mobilenetv4_conv_small", "mobilenetv2_035", "mnasnet_small", "fbnetv3_b",
    "ghostnet_050", "ghostnetv2_100", "lcnet_050", "tinynet_e", "hardcorenas_a", "rexnet_100", "densenet121",
    "dla34", "dpn48b", "hrnet_w18_small", "cspresnet50", "cspdarknet53", "darknet17", "xception41",
    "selecsls42b", "ese_vovnet19b_dw", "hgnetv2_b0", "nf_resnet26", "convnext_atto", "convnextv2_atto",
    "inception_next_tiny", "edgenext_xx_small", "poolformer_s12", "convformer_s18", "caformer_s18",
    "mobilevitv2_050", "fastvit_t8", "repvit_m1", "mambaout_femto", "mobileone_s0", "rdnet_tiny", "pvt_v2_b0",
    "davit_tiny", "focalnet_tiny_srf",
]  # fmt: skip
# Left out: EfficientViT-B (MIT) and StarNet, whose last maps with random weights hardly vary with the image
# (the two images' min-max scaled maps differ by less than 1e-3), a property of the random network, not of the choice.
#: built for the input size with img_size= (byobnet CNNs, vision transformers, hybrids, MLPs)
SIZED = [
    "resnext26ts", "regnetz_b16", "gernet_s", "efficientformerv2_s0", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "eva02_tiny_patch14_224",
    "vit_relpos_small_patch16_224", "flexivit_small", "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256",
    "swinv2_cr_tiny_224", "maxvit_rmlp_pico_rw_256", "coatnet_nano_rw_224", "coat_lite_tiny", "pit_ti_224",
    "twins_pcpvt_small", "xcit_nano_12_p16_224", "convit_tiny", "cait_xxs24_224", "mobilevit_xxs",
    "mixer_s32_224", "resmlp_12_224", "gmlp_ti16_224",
    "hiera_tiny_224", "sequencer2d_s",
]  # fmt: skip
#: only at their own 224x224
NATIVE = ["levit_128s", "efficientformer_l1", "tiny_vit_5m_224"]
ZERO_HEAD = {"mixer_s32_224", "resmlp_12_224", "gmlp_ti16_224", "hiera_tiny_224", "sequencer2d_s"}


def build_timm(name: str) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    size = 224 if name in NATIVE else 64
    kwargs = {"img_size": size} if name in SIZED else {}
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval(), size


@pytest.mark.parametrize("name", CNNS + SIZED + NATIVE)
def test_timm_architectures_get_an_image_dependent_map(name: str) -> None:
    model, size = build_timm(name)
    explain_and_check(model, two_images(size), name in ZERO_HEAD)


def test_the_timm_zoo_spans_the_families() -> None:
    names = CNNS + SIZED + NATIVE
    assert len(set(names)) == len(names) >= 80
    assert all(n in timm.list_models() for n in names)
    # timm's model modules (resnet, byobnet, vision_transformer, swin_transformer, mlp_mixer, hiera, ...)
    families = {module for module in timm.list_modules() if set(timm.list_models(module=module)) & set(names)}
    assert len(families) >= 45, sorted(families)
