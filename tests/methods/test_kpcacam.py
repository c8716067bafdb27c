"""KPCA-CAM against scikit-learn's KernelPCA (an independent implementation) and pytorch-grad-cam's KPCA_CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _perturb_refs import DT, full_res_model, inputs

import camlens
from camlens.methods.kpcacam import kernel_first_component


def sklearn_projection(a: torch.Tensor, kernel: str, gamma: float | None) -> np.ndarray:
    from sklearn.decomposition import KernelPCA

    f = a.flatten(1).T.numpy()  # (P, C)
    f = f - f.mean(axis=0)
    return KernelPCA(n_components=1, kernel=kernel, gamma=gamma, eigen_solver="dense").fit_transform(f)[:, 0]


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "linear", "cosine"])
def test_kernel_first_component_matches_sklearn_up_to_the_sign_rule(kernel: str) -> None:
    model, x = full_res_model(), inputs()
    a = model[:4](x).detach()  # (2, 4, 6, 6)
    ours = kernel_first_component(a, kernel, gamma=None if kernel != "rbf" else 0.3, sign="max-abs")
    for n in range(2):
        ref = sklearn_projection(a[n], kernel, None if kernel != "rbf" else 0.3)
        np.testing.assert_allclose(ours[n].flatten().numpy(), ref, rtol=1e-7, atol=1e-9)
    # the default sign rule: bright where the features are strong
    default = kernel_first_component(a, kernel, gamma=None if kernel != "rbf" else 0.3)
    for n in range(2):
        assert float((default[n] * a[n].sum(0)).sum()) >= 0
        torch.testing.assert_close(default[n].abs(), ours[n].abs())


def test_linear_kernel_is_centred_eigencam() -> None:
    model, x = full_res_model(), inputs()
    kp = camlens.KPCACAM(model, "3", kernel="linear")(x).maps["3"]
    eig = camlens.EigenCAM(model, "3", center=True)(x).maps["3"]
    torch.testing.assert_close(kp, eig)


def test_kpcacam_matches_pytorch_grad_cam_with_its_sign_rule() -> None:
    from pytorch_grad_cam import KPCA_CAM

    model, x = full_res_model(), inputs()
    ours = camlens.KPCACAM(model, "3", sign="max-abs", relu=True)(x, target=[0, 1]).maps["3"]
    theirs = KPCA_CAM(model, [model[3]])(x, targets=None)
    torch.testing.assert_close(ours, torch.from_numpy(theirs).to(DT), rtol=0, atol=1e-5)


def test_kpcacam_keywords_are_checked() -> None:
    with pytest.raises(camlens.InputError, match="kernel='laplace'"):
        camlens.KPCACAM(full_res_model(), "3", kernel="laplace")
    with pytest.raises(camlens.InputError, match="sign='up'"):
        camlens.KPCACAM(full_res_model(), "3", sign="up")
