"""safetensors weights I/O: bit-exact round trip, clear errors on mismatching files."""
import json

import pytest
import torch

from mtvif_zoo import WeightsMismatchError, create_model, load_weights, save_weights
from mtvif_zoo.weights import read_metadata


def test_round_trip_is_bitwise(tmp_path):
    torch.manual_seed(0)
    a = create_model('mtvif_iv')
    path = save_weights(a, tmp_path / 'w.safetensors')
    torch.manual_seed(1)
    b = load_weights(create_model('mtvif_iv'), path)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    cfg = json.loads(read_metadata(path)['mtvif_zoo_config'])
    assert cfg == {'architecture': 'mtvif_iv', 'backbone': 'segmif', 'head': 'mth', 'in_chans': 3, 'num_classes': 9}
    assert path.read_bytes()[:8] != b'PK\x03\x04'  # not a zip/pickle checkpoint


def test_mismatching_keys_and_shapes_are_named(tmp_path):
    path = save_weights(create_model('mtvif_iii'), tmp_path / 'iii.safetensors')
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(create_model('mtvif_iv'), path)
    msg = str(e.value)
    assert 'missing keys: backbone.DRDB1.' in msg and 'unexpected keys: backbone.inf_conv.conv.bias' in msg
    path1 = save_weights(create_model('mtvif_iii', in_chans=1), tmp_path / 'iii_1ch.safetensors')
    with pytest.raises(WeightsMismatchError, match=r'shape mismatches: backbone.inf_conv.conv.weight: '
                                                  r'file \(16, 1, 3, 3\) vs model \(16, 3, 3, 3\)'):
        load_weights(create_model('mtvif_iii'), path1)


def test_fusion_only_weights_load_non_strict(tmp_path):
    full = create_model('mtvif_iii').eval()
    path = save_weights(full.fusion_only(), tmp_path / 'fo.safetensors')
    with pytest.raises(WeightsMismatchError, match='missing keys: head.seg_classifier'):
        load_weights(create_model('mtvif_iii'), path)
    m = load_weights(create_model('mtvif_iii'), path, strict=False).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x, x), full(x, x))


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='weights file not found'):
        load_weights(create_model('seafusion'), tmp_path / 'none.safetensors')
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'not a safetensors file')
    with pytest.raises(ValueError, match='not a readable safetensors file'):
        load_weights(create_model('seafusion'), bad)
    with pytest.raises(ValueError, match='use a .safetensors file name'):
        save_weights(create_model('seafusion'), tmp_path / 'w.pth')
