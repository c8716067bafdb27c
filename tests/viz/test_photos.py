"""The pieces of `camlens explain`'s outputs: unique names that keep the file stem, maps back at any scale."""

from __future__ import annotations

import torch

from camlens.preprocess import Geometry
from camlens.viz.photos import PhotoResult, output_stems


def test_output_stems_keep_the_stem_and_avoid_repeats_and_the_runs_own_names():
    assert output_stems(["cat", "cat", "grid", "explain", "cat-2", "dog"]) == [
        "cat", "cat-2", "grid-2", "explain-2", "cat-2-2", "dog"]  # fmt: skip


def test_maps_go_back_on_the_photo_at_its_size_and_at_a_thumbnails():
    # a 300x451 photo, shorter side resized to 64 (64x96), centre crop 64x64 at columns 16..80
    g = Geometry((300, 451), (64, 96), (0, 16, 64, 64))
    r = PhotoResult("p", "p.jpg", None, g, -1, 0, 1.0, [0], [1.0], {"gradcam · l": torch.rand(1, 8, 8)})
    full = r.on_photo("gradcam · l")
    assert full.shape == (1, 300, 451) and r.size == (451, 300)
    torch.testing.assert_close(full, g.to_original(r.maps["gradcam · l"]), equal_nan=True)
    small = r.on_photo("gradcam · l", (90, 60))
    assert small.shape == (1, 60, 90)
    inside = torch.isfinite(small[0, 30])
    assert not inside[:14].any() and inside[16:74].all() and not inside[76:].any()  # crop at 75..376 of 451
