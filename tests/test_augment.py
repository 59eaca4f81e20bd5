"""Training-image distortions (``data.augment``): geometry, determinism, the batch stream,
resume, and the config's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heedful.batching import BatchStream
from heedful.config import load_config
from heedful.errors import ConfigError
from heedful.presets import get_preset
from heedful.vision.augment import AugmentConfig, ImageAugmenter, distort
from heedful.vision.data import ImageReader
from heedful.vision.synthetic import write_glyph_corpus

ALL_ON = AugmentConfig(rotate=3, shear=0.3, scale=0.1, shift=2, warp=1.0, stroke=0.5)


def _bar(height: int = 32, width: int = 64) -> np.ndarray:
    """A vertical stroke 4 pixels wide in the middle of a blank image (ink high)."""
    image = np.zeros((height, width), dtype=np.uint8)
    image[6:26, 30:34] = 255
    return image


def _centre_of_ink(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image > 127)
    return float(rows.mean()), float(cols.mean())


def test_nothing_on_leaves_the_image_as_it_is() -> None:
    image = _bar()
    out = distort(image, AugmentConfig(), np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)
    assert not AugmentConfig().active and ALL_ON.active


def test_distortions_keep_shape_background_and_roughly_the_ink() -> None:
    image = _bar()
    for seed in range(20):
        out = distort(image, ALL_ON, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        # the stroke is still there, near where it was (the distortions are small)
        row, col = _centre_of_ink(out)
        assert abs(row - 15.5) < 4 and abs(col - 31.5) < 4
        assert 0.5 < (out > 127).sum() / (image > 127).sum() < 2.5
    blank = np.zeros((32, 40), dtype=np.uint8)
    np.testing.assert_array_equal(distort(blank, ALL_ON, np.random.default_rng(1)), blank)


def test_shear_slants_a_vertical_stroke_and_rotation_turns_about_the_centre() -> None:
    image = _bar()
    slants = []
    for seed in range(20):
        out = distort(image, AugmentConfig(shear=0.3), np.random.default_rng(seed))
        top = np.nonzero(out[8] > 127)[0].mean()
        bottom = np.nonzero(out[23] > 127)[0].mean()
        slants.append(top - bottom)  # 15 rows apart: up to 0.3 x 15 = 4.5 pixels
    # both ways, up to the limit, and the stroke stays straight where it crosses the centre
    assert min(slants) < -2 and max(slants) > 2 and max(map(abs, slants)) <= 5
    for seed in range(5):
        out = distort(image, AugmentConfig(rotate=10), np.random.default_rng(seed))
        row, col = _centre_of_ink(out)
        assert abs(row - 15.5) < 0.6 and abs(col - 31.5) < 0.6


def test_the_augmenter_is_a_pure_function_of_its_seed() -> None:
    images = [_bar(width=w) for w in (40, 64, 80)]
    augment = ImageAugmenter(ALL_ON)
    a, b, c = augment(images, 5), augment(images, 5), augment(images, 6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert [x.shape for x in a] == [x.shape for x in images]


def test_the_stream_distorts_training_batches_the_same_way_at_the_same_position() -> None:
    images = [np.tile(_bar(width=48), (1, 1)) for _ in range(12)]
    targets = [[5, 6, 7]] * 12
    src = ImageReader(32).array(images)

    def stream(augment: ImageAugmenter | None, prefetch: int = 0) -> BatchStream:
        return BatchStream(src, targets, batch_tokens=200, seed=3, pad_id=0, bos_id=1,
                           eos_id=2, prefetch=prefetch, augment=augment)

    plain, first = stream(None), stream(ImageAugmenter(ALL_ON))
    again = stream(ImageAugmenter(ALL_ON), prefetch=2)
    try:
        batches = [next(first) for _ in range(4)]
        repeated = [next(again) for _ in range(4)]
        untouched = [next(plain) for _ in range(4)]
    finally:
        again.close()
    for x, y, z in zip(batches, repeated, untouched, strict=True):
        assert x.src.shape == z.src.shape
        assert np.array_equal(x.src.numpy(), y.src.numpy())
        assert not np.array_equal(x.src.numpy(), z.src.numpy())
        assert np.array_equal(x.src_mask.numpy(), z.src_mask.numpy())
        assert np.array_equal(x.tgt_out.numpy(), z.tgt_out.numpy())
    with pytest.raises(ValueError, match="distorts images or audio; the source is text"):
        BatchStream([[4, 5, 2]], targets[:1], 100, 1, 0, 1, 2, augment=ImageAugmenter(ALL_ON))


def test_training_with_augmentation_resumes_exactly(tmp_path: Path, check_exact_resume) -> None:
    data = write_glyph_corpus(tmp_path / "data", {"train": 60, "dev": 6, "test": 6},
                              max_length=3)
    base = ["--preset", "image-digits", f"data.dir={data}", "data.image_height=16",
            "model.embed_dim=16", "model.hidden_dim=16", "model.image_channels=[4,4,8,8]",
            "train.batch_tokens=300", "train.valid_every=100", "train.threads=1",
            "data.augment=null"]
    check_exact_resume(base, ["data.augment.warp=1.5", "data.augment.rotate=5"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.augment.warp=9"], r"data\.augment\.warp"),
    (["data.augment.twist=1"], r"data\.augment\.twist"),
    (["data.augment.scale=-0.1"], r"data\.augment\.scale"),
])
def test_augment_config_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides, base=get_preset("image-digits"))


def test_augmentation_is_refused_for_text_sources() -> None:
    with pytest.raises(ConfigError, match="data.augment applies only to data.source: image"):
        load_config(None, ["data.augment.warp=1"])
