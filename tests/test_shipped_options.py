"""The option files shipped in options/ are valid: known keys and types, registered names, buildable networks.

Paper-scale files point at datasets and weights that are not here, so paths are not checked; everything else a
user would trip over first (a misspelt type, a wrong constructor key, a bad scheduler, an unknown IQA metric) is.
"""
import copy
import glob
import os

import pytest

from conftest import REPO

SHIPPED = sorted(glob.glob(os.path.join(REPO, 'options', 'train', '*', '*.yml')) +
                 glob.glob(os.path.join(REPO, 'options', 'test', '*', '*.yml')))


def test_there_are_paper_scale_options_for_both_datasets():
    names = {os.path.basename(p) for p in SHIPPED}
    for stage in ('CFMG', 'ORNet'):
        for dataset in ('SIDD', 'GoPro'):
            assert f'train_{stage}_{dataset}.yml' in names


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_option_file_is_valid(path):
    import pyiqa
    import torch
    from basicsr.archs import build_network

    import gtplus_models  # noqa: F401  (registers everything)
    from gtplus_models.options import check_registry_names, check_types, load_yaml
    opt = load_yaml(path)
    is_train = os.sep + 'train' + os.sep in path
    check_types(opt, is_train)
    check_registry_names(opt)
    networks = [key for key, value in opt.items() if key.startswith('network_') and isinstance(value, dict)]
    assert 'network_g' in networks
    for key in networks:
        net = build_network(copy.deepcopy(opt[key]))
        assert sum(p.numel() for p in net.parameters()) > 0
        assert isinstance(net, torch.nn.Module)
    for metric in ((opt.get('train') or {}).get('quality_opt') or {}).get('metrics', []):
        assert metric['name'] in pyiqa.list_models(metric_mode='NR'), metric
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if metric['type'] == 'calculate_pyiqa':
            assert metric['metric'] in pyiqa.list_models(), name
