"""The embedded sample photographs and ``gtplus sample-data``."""
import os

import numpy as np
import pytest

from gtplus_data.sample_photos import load_sample_photo, sample_photo_names


def test_eight_real_colour_photos_offline():
    names = sample_photo_names()
    assert names == sorted(names) and len(names) == 8
    assert {'astronaut', 'chelsea', 'coffee', 'rocket'} <= set(names)
    img = load_sample_photo('stereo_motorcycle')  # a stereo pair: the left view
    assert img.dtype == np.uint8 and img.shape == (500, 741, 3)
    with pytest.raises(KeyError, match='unknown sample photo'):
        load_sample_photo('camera')  # grayscale, not in the set


def test_sample_data_command_is_idempotent(tmp_path, capsys):
    from gtplus_models.cli import main
    out = tmp_path / 'photos'
    assert main(['sample-data', str(out)]) == 0
    files = sorted(os.listdir(out))
    assert files == [f'{name}.png' for name in sample_photo_names()]
    stamps = {name: os.stat(out / name).st_mtime_ns for name in files}
    assert main(['sample-data', str(out)]) == 0
    assert {name: os.stat(out / name).st_mtime_ns for name in files} == stamps  # nothing rewritten
    from gtplus_data.image_source import ImageSource
    np.testing.assert_array_equal((ImageSource(str(out)).read('coffee') * 255).round().astype(np.uint8),
                                  load_sample_photo('coffee'))


def test_sample_data_into_a_file_exits_2(tmp_path, capsys):
    from gtplus_models.cli import main
    (tmp_path / 'taken').write_text('a file, not a folder')
    assert main(['sample-data', str(tmp_path / 'taken')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('gtplus sample-data: error:') and 'taken' in err and 'Traceback' not in err
