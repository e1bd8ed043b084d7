"""Dataset layouts, pairing, error reporting by file name, paired augmentation and the samplers."""
import numpy as np
import pytest
import torch
from PIL import Image

from mtvif_zoo.data import (
    DatasetError,
    ResumableBatchSampler,
    VisIRSegDataset,
    build_train_val,
    detect_layout,
    find_pairs,
    split_train_val,
    validate_records,
)


def test_folder_layout_with_split_lists(make_data, tmp_path):
    root = make_data(tmp_path / 'd', n=6, splits={'train': [0, 1, 2, 3], 'val': [4], 'test': [5]})
    assert detect_layout(root) == 'folder'
    assert [r.stem for r in find_pairs(root, 'val')] == ['004']
    layout, train, val = build_train_val(root)
    assert (layout, [r.stem for r in train], [r.stem for r in val]) == ('folder', ['000', '001', '002', '003'], ['004'])
    assert train[0].label.name == '000.png'


def test_nine_to_one_split_is_fixed_by_seed(make_data, tmp_path):
    root = make_data(tmp_path / 'd', n=20, size=(8, 8))
    _, train, val = build_train_val(root, seed=3)
    _, train2, val2 = build_train_val(root, seed=3)
    assert len(train) == 18 and len(val) == 2 and val == val2 and train == train2
    assert not {r.stem for r in train} & {r.stem for r in val}
    assert split_train_val(train + val, 0.1, seed=4)[1] != val  # another seed, another split


def test_msrs_and_fmb_layouts(tmp_path):
    rng = np.random.default_rng(0)
    for layout, (v, i, lab) in {'msrs': ('vi', 'ir', 'Segmentation_labels'),
                                'fmb': ('Visible', 'Infrared', 'Label')}.items():
        root = tmp_path / layout
        for split in ('train', 'test'):
            for d in (v, i, lab):
                (root / split / d).mkdir(parents=True)
            for k in range(3):
                for d in (v, i, lab):
                    Image.fromarray(rng.integers(0, 5, (8, 8), dtype=np.uint8)).save(root / split / d / f'{k}.png')
        assert detect_layout(root) == layout
        assert len(find_pairs(root, 'test')) == 3
        got, train, val = build_train_val(root)
        assert got == layout and len(train) == 2 and len(val) == 1


def test_missing_partner_and_missing_label_are_named(make_data, tmp_path):
    root = make_data(tmp_path / 'd', n=4, size=(8, 8))
    (root / 'ir' / '001.png').unlink()
    (root / 'label' / '002.png').unlink()
    Image.new('L', (8, 8)).save(root / 'ir' / 'extra.png')
    with pytest.raises(DatasetError) as e:
        find_pairs(root, 'all')
    msg = str(e.value)
    assert '001.png: visible image without an infrared partner' in msg
    assert '002.png: no label image' in msg
    assert 'extra.png: infrared image without a visible partner' in msg
    with pytest.raises(DatasetError) as e:  # fusion-only training (baselines) needs no labels
        find_pairs(root, 'all', require_labels=False)
    assert 'no label image' not in str(e.value) and '001.png' in str(e.value)


def test_size_mismatch_label_range_and_unreadable_files_are_named(make_data, tmp_path):
    root = make_data(tmp_path / 'd', n=5, size=(16, 16))
    Image.new('L', (12, 16)).save(root / 'ir' / '000.png')
    data = (root / 'ir' / '004.png').read_bytes()
    (root / 'ir' / '004.png').write_bytes(data[:len(data) // 2])  # truncated: the header alone is fine
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(root / 'label' / '001.png')
    (root / 'vi' / '002.png').write_bytes(b'not a png')
    recs = find_pairs(root, 'all')
    with pytest.raises(DatasetError) as e:
        validate_records(recs, num_classes=9, crop=8)
    msg = str(e.value)
    assert "000.png: size mismatch within pair '000'" in msg and 'infrared 16x12' in msg
    assert '001.png: label value(s) [9] outside the class range 0..8' in msg
    assert '002.png: unreadable visible image' in msg
    assert 'ir/004.png: unreadable infrared image' in msg
    assert '003' not in msg
    validate_records(recs[1:2], num_classes=9, ignore_index=9)  # an ignored value is fine
    with pytest.raises(DatasetError, match='003.png: 16x16 image is smaller than the 32x32 crop'):
        validate_records(recs[3:4], num_classes=9, crop=32)


def test_empty_dataset_fails(tmp_path):
    for d in ('vi', 'ir', 'label'):
        (tmp_path / d).mkdir()
    with pytest.raises(DatasetError, match='empty'):
        find_pairs(tmp_path, 'all')
    with pytest.raises(FileNotFoundError):
        find_pairs(tmp_path / 'nope')
    (tmp_path / 'other').mkdir()
    with pytest.raises(DatasetError, match='no known layout'):
        detect_layout(tmp_path / 'other')


def test_crops_and_flips_are_identical_for_vis_ir_label(tmp_path):
    # vis R channel, ir and label all encode the same per-pixel code: any misalignment shows
    h, w = 20, 24
    code = (np.arange(h * w).reshape(h, w) % 9).astype(np.uint8)
    big = (code * 25 + 3).astype(np.uint8)
    for d in ('vi', 'ir', 'label'):
        (tmp_path / d).mkdir()
    Image.fromarray(np.stack([big, big // 2, big // 3], -1)).save(tmp_path / 'vi' / 'a.png')
    Image.fromarray(big).save(tmp_path / 'ir' / 'a.png')
    Image.fromarray(code).save(tmp_path / 'label' / 'a.png')
    ds = VisIRSegDataset(find_pairs(tmp_path, 'all'), crop=8, train=True, seed=0, hflip=0.5, vflip=0.5)
    crops = set()
    for epoch in range(12):
        s = ds[(epoch, 0)]
        assert s['vis'].shape == (3, 8, 8) and s['ir'].shape == (1, 8, 8) and s['label'].shape == (8, 8)
        lab = s['label'].numpy()
        assert np.array_equal(np.round(s['ir'][0].numpy() * 255), lab * 25 + 3)
        assert np.array_equal(np.round(s['vis'][0].numpy() * 255), lab * 25 + 3)
        crops.add(s['label'].numpy().tobytes())
        assert torch.equal(ds[(epoch, 0)]['vis'], s['vis'])  # a function of (seed, epoch, index)
    assert len(crops) > 6  # crops / flips vary with the epoch
    val = VisIRSegDataset(ds.records, crop=8, train=False)[0]
    assert np.array_equal(val['label'].numpy(), code[6:14, 8:16])  # centre crop, no flip


def test_sampler_global_batches_split_across_ranks_and_resume():
    one = ResumableBatchSampler(10, 4, seed=1)
    ranks = [ResumableBatchSampler(10, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in [one, *ranks]:
        s.set_epoch(3)
    assert len(one) == 2 and all(len(s) == 2 for s in ranks)
    for b1, b0, b2 in zip(one, *ranks):
        assert b1 == b0 + b2
    full = list(one)
    one.set_epoch(3, start_batch=1)
    assert list(one) == full[1:]
    one.set_epoch(4)
    assert list(one) != full


def test_mfnet220_layout_validates(shared):
    root = shared('mfnet220')
    layout, train, val = build_train_val(root)
    assert (layout, len(train), len(val), len(find_pairs(root, 'test'))) == ('folder', 180, 20, 20)
    validate_records(val, num_classes=9, crop=256)
    s = VisIRSegDataset(val[:1], crop=64, train=True)[0]
    assert s['vis'].shape == (3, 64, 64) and s['label'].max() < 9


def test_intensity_gain_augmentation(tmp_path):
    for d in ('vi', 'ir', 'label'):
        (tmp_path / d).mkdir()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / 'vi' / 'a.png')
    Image.fromarray(np.full((16, 16), 160, np.uint8)).save(tmp_path / 'ir' / 'a.png')
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / 'label' / 'a.png')
    recs = find_pairs(tmp_path, 'all')
    plain = VisIRSegDataset(recs, crop=8, train=True, seed=0)
    aug = VisIRSegDataset(recs, crop=8, train=True, seed=0, ir_gain=(0.25, 0.5), vis_gain=(1.0, 1.0))
    gains = set()
    for epoch in range(6):
        p, a = plain[(epoch, 0)], aug[(epoch, 0)]
        g = (a['ir'] / p['ir']).unique()
        assert g.numel() == 1 and 0.25 <= g.item() <= 0.5  # one gain per crop, inside the range
        assert torch.equal(a['vis'], p['vis'])  # gain 1: unchanged
        gains.add(round(g.item(), 6))
        assert torch.equal(aug[(epoch, 0)]['ir'], a['ir'])  # deterministic in (seed, epoch, index)
    assert len(gains) > 3
    with pytest.raises(ValueError, match=r'ir_gain must be \(low, high\) with 0 < low <= high'):
        VisIRSegDataset(recs, crop=8, ir_gain=(0.5, 0.2))
