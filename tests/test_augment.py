import torch
import torch.nn.functional as F

from ncstudy.data.augment import batch_generator, random_crop_flip


def reference(images, generator, padding=4):
    """Per-image crop and flip with the same random draws, written the slow, obvious way."""
    b, _, h, w = images.shape
    offset_y = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    offset_x = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    padded = F.pad(images, (padding,) * 4)
    out = []
    for i in range(b):
        crop = padded[i, :, offset_y[i] : offset_y[i] + h, offset_x[i] : offset_x[i] + w]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


def test_batched_crop_flip_equals_the_per_image_reference():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    fast = random_crop_flip(images, batch_generator(1, 2, 3))
    slow = reference(images, batch_generator(1, 2, 3))
    assert fast.dtype == torch.uint8 and fast.shape == images.shape
    assert torch.equal(fast, slow)


def test_augmentation_is_seeded_and_varies_by_batch():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(random_crop_flip(images, batch_generator(0, 0, 0)), random_crop_flip(images, batch_generator(0, 0, 0)))
    assert not torch.equal(random_crop_flip(images, batch_generator(0, 0, 0)), random_crop_flip(images, batch_generator(0, 0, 1)))
