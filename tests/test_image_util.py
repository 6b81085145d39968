"""gtplus_data.image_util, the one home of HWC numpy <-> NCHW tensor and PNG I/O: exact round trips, atomic writes."""
import os

import cv2
import numpy as np
import pytest
import torch

from gtplus_data.image_util import (bgr_image_to_tensor, chw_tensor, encode_png, image_to_tensor, tensor_to_image,
                                    tensor_to_uint8, to_uint8, write_png)


def test_uint8_survives_every_conversion_exactly():
    rng = np.random.RandomState(0)
    img8 = rng.randint(0, 256, (5, 7, 3)).astype(np.uint8)
    img = img8.astype(np.float32) / 255.
    tensor = image_to_tensor(img)
    assert tensor.shape == (1, 3, 5, 7) and tensor.dtype == torch.float32
    assert torch.equal(tensor[0], chw_tensor(img))
    assert torch.equal(tensor[0, :, 2, 3], torch.from_numpy(img[2, 3]))  # channel order kept (RGB stays RGB)
    np.testing.assert_array_equal(tensor_to_uint8(tensor), img8)
    np.testing.assert_array_equal(tensor_to_image(tensor), img)


def test_chw_tensor_of_strided_crops():
    """Rotated (transposed) and flipped crops, as augment leaves them, and negative strides, which torch cannot view."""
    img = np.random.RandomState(1).rand(9, 11, 3).astype(np.float32)
    for view in (img[1:8, 2:9].transpose(1, 0, 2), img[::-1], img[:, ::-2, ::-1], img):
        expected = torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1)))
        got = chw_tensor(view)
        assert got.dtype == torch.float32 and torch.equal(got, expected)
        assert torch.equal(torch.stack([got, got]), torch.stack([expected, expected]))


def test_tensor_to_image_clamps_and_rounds_once():
    tensor = torch.tensor([-0.5, 0.5 / 255, 1.5 / 255, 2.0]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert tensor_to_uint8(tensor)[0, :, 0].tolist() == [0, 0, 2, 255]  # round half to even, as numpy
    assert to_uint8(np.full((1, 1, 3), 65535, np.uint16)).tolist() == [[[255, 255, 255]]]


def test_bgr_metric_image_becomes_rgb_tensor():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    tensor = bgr_image_to_tensor(bgr, crop_border=1)
    assert tensor.shape == (1, 3, 2, 2) and tensor[0, 2].min() == 1 and tensor[0, :2].max() == 0
    with pytest.raises(ValueError, match='3-channel'):
        bgr_image_to_tensor(np.zeros((4, 4, 4), np.uint8))


def test_write_png_matches_opencv_and_leaves_no_temporary(tmp_path):
    img = (np.random.RandomState(1).rand(9, 11, 3) * 255).astype(np.uint8)
    path = write_png(str(tmp_path / 'sub' / 'a.png'), img)
    cv2.imwrite(str(tmp_path / 'ref.png'), img[..., ::-1])
    assert open(path, 'rb').read() == open(tmp_path / 'ref.png', 'rb').read()
    assert sorted(os.listdir(tmp_path / 'sub')) == ['a.png']
    np.testing.assert_array_equal(cv2.imread(path)[..., ::-1], img)
    assert encode_png(img, 9) != encode_png(img, None)  # an explicit level is honoured
    with pytest.raises(OSError, match='cannot write'):
        write_png(str(tmp_path / 'ref.png' / 'x.png'), img)
