"""Segmentation, detection and embedding targets, and models returning dataclasses, dicts and tuples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from beyond_models import TinyDetector, hf_vit
from camlens.core.targets_extra import box_iou


def _iou_loop(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_box_iou_matches_a_loop():
    torch.manual_seed(0)
    xy = torch.rand(5, 2) * 10
    a = torch.cat([xy, xy + torch.rand(5, 2) * 6 + 0.1], 1)
    xy = torch.rand(3, 2) * 10
    b = torch.cat([xy, xy + torch.rand(3, 2) * 6 + 0.1], 1)
    got = box_iou(a, b)
    for i in range(5):
        for j in range(3):
            assert got[i, j].item() == pytest.approx(_iou_loop(a[i].tolist(), b[j].tolist()), abs=1e-6)
    assert box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])).item() == pytest.approx(1 / 7)


class SegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return {"out": self.classifier(self.body(x))}  # torchvision's segmentation output


def test_segmentation_target_sums_the_class_over_the_mask():
    torch.manual_seed(0)
    model = SegNet().eval()
    x = torch.rand(2, 1, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 1:6] = True
    target = camlens.SegmentationTarget(2, mask)
    logits = model(x)["out"]
    got = target(logits)
    for n in range(2):
        expected = sum(logits[n, 2, i, j].item() for i in range(8) for j in range(8) if mask[i, j])
        assert got[n].item() == pytest.approx(expected, abs=1e-5)
    r = camlens.GradCAM(model, "body.0", output="out")(x, target=target)
    # reference: Grad-CAM with the same score written as a lambda
    ref = camlens.GradCAM(model, "body.0", output="out")(x, target=lambda o: (o[:, 2] * mask).sum(dim=(1, 2)))
    torch.testing.assert_close(r.raw["body.0"], ref.raw["body.0"], atol=1e-6, rtol=0)
    assert torch.equal(camlens.SegmentationTarget(0)(logits), logits[:, 0].sum(dim=(1, 2)))
    with pytest.raises(camlens.TargetError, match=r"mask has shape \(4, 4\)"):
        camlens.SegmentationTarget(0, torch.ones(4, 4))(logits)
    with pytest.raises(camlens.TargetError, match="class_index=5 is out of range for 3"):
        camlens.SegmentationTarget(5)(logits)


def test_detection_target_scores_matched_boxes_like_a_loop():
    torch.manual_seed(0)
    model = TinyDetector(classes=2).eval()
    x = torch.rand(2, 1, 16, 16)
    out = model(x)
    packed = camlens.detection_output()(out)
    assert packed.shape == (2, 16, 6)
    given = torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 6.0, 16.0, 14.0], [30.0, 30.0, 31.0, 31.0]])
    labels = torch.tensor([1, 0, 1])
    target = camlens.DetectionTarget(given, labels, iou_threshold=0.3)
    got = target(packed)
    for n in range(2):
        total = 0.0
        for g in range(3):
            ious = [_iou_loop(out["boxes"][n, m].tolist(), given[g].tolist()) for m in range(16)]
            best = max(range(16), key=lambda m: ious[m])
            if ious[best] >= 0.3:
                total += out["logits"][n, best, labels[g]].item()
        assert got[n].item() == pytest.approx(total, abs=1e-5)
    assert got.abs().sum() > 0  # at least one match: the test is not vacuous
    r = camlens.GradCAM(model, "backbone.2", output=camlens.detection_output())(x, target=target)
    assert r.map.shape == (2, 16, 16) and r.raw["backbone.2"].shape == (2, 4, 4)
    assert float(r.raw["backbone.2"].amax()) > 0


def test_detection_output_pads_torchvision_style_lists():
    a = {"boxes": torch.tensor([[0.0, 0, 4, 4]]), "scores": torch.tensor([2.0])}
    b = {"boxes": torch.tensor([[0.0, 0, 4, 4], [4.0, 4, 8, 8]]), "scores": torch.tensor([1.0, 3.0])}
    packed = camlens.detection_output(scores="scores")([a, b])
    assert packed.shape == (2, 2, 5)
    assert torch.equal(packed[0, 1], torch.zeros(5))  # padding: an empty box, score 0
    got = camlens.DetectionTarget([[4.0, 4, 8, 8]])(packed)
    assert got.tolist() == [0.0, 3.0]


def test_embedding_target_is_the_cosine_similarity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()).eval()
    x = torch.rand(3, 1, 6, 6)
    concept = torch.randn(16)
    emb = model(x)
    got = camlens.EmbeddingTarget(concept)(emb)
    for n in range(3):
        dot = sum(emb[n, d].item() * concept[d].item() for d in range(16))
        norms = sum(v * v for v in emb[n].tolist()) ** 0.5 * sum(v * v for v in concept.tolist()) ** 0.5
        assert got[n].item() == pytest.approx(dot / norms, abs=1e-6)
    r = camlens.GradCAM(model, "0")(x, target=camlens.EmbeddingTarget(concept))
    assert r.targets is None and r.scores.shape == (3,)
    torch.testing.assert_close(r.scores, got.detach(), atol=1e-6, rtol=0)
    with pytest.raises(camlens.TargetError, match="all zeros"):
        camlens.EmbeddingTarget(torch.zeros(16))
    with pytest.raises(camlens.TargetError, match=r"needs \(N, 8\) embeddings, got shape \(3, 16\)"):
        camlens.EmbeddingTarget(torch.ones(8))(emb)


def test_models_returning_dataclasses_dicts_and_tuples():
    model = hf_vit()
    x = torch.rand(2, 3, 32, 32)
    layer = "vit.layers.1.layernorm_before"
    auto = camlens.GradCAM(model, layer)(x)  # ImageClassifierOutput: .logits found automatically
    assert type(model(x)).__name__ == "ImageClassifierOutput"
    torch.testing.assert_close(auto.logits, model(x).logits.detach())
    by_name = camlens.GradCAM(model, layer, output="logits")(x)
    torch.testing.assert_close(by_name.map, auto.map, atol=0, rtol=0)

    class AsDict(nn.Module):
        def __init__(self, inner, key):
            super().__init__()
            self.inner, self.key = inner, key

        def forward(self, x):
            return {self.key: self.inner(x).logits, "aux": torch.zeros(1)}

    class AsTuple(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return (torch.zeros(1), self.inner(x).logits)

    inner = "inner." + layer
    d = camlens.GradCAM(AsDict(model, "logits"), inner)(x)  # dict with "logits": automatic
    torch.testing.assert_close(d.map, auto.map, atol=0, rtol=0)
    d2 = camlens.GradCAM(AsDict(model, "cls"), inner, output="cls")(x)
    torch.testing.assert_close(d2.map, auto.map, atol=0, rtol=0)
    t = camlens.GradCAM(AsTuple(model), inner, output=1)(x)
    torch.testing.assert_close(t.map, auto.map, atol=0, rtol=0)
    c = camlens.GradCAM(AsTuple(model), inner, output=lambda o: o[1])(x)
    torch.testing.assert_close(c.map, auto.map, atol=0, rtol=0)
    with pytest.raises(camlens.TargetError, match="output='key', output=index or output=callable"):
        camlens.GradCAM(AsDict(model, "cls"), inner)(x)
