"""Model cards: generated from the entry (measured numbers only), parsed by huggingface_hub, found anywhere."""
import copy
import re
import shutil

import pytest

import mtvif_zoo
from mtvif_zoo.cli import main
from mtvif_zoo.hub import card_block, card_summary, model_card, render_card
from mtvif_zoo.hub.cards import CITATIONS, NOT_RECORDED

NAME = 'mtvif_iii.testonly'


def test_card_parses_with_huggingface_hub(published):
    from huggingface_hub import ModelCard
    path = published['weights'] / NAME / 'README.md'
    card = ModelCard.load(path)
    d = card.data.to_dict()
    assert d['library_name'] == 'mtvif_zoo' and d['license'] == 'apache-2.0'
    assert d['pipeline_tag'] == 'image-to-image'
    assert {'image-fusion', 'infrared', 'mtvif_iii', 'seafusion'} <= set(d['tags'])
    assert d['datasets'] == ['none (random initialisation, test only)']
    results = {(r.task_type, r.metric_name): r for r in card.data.eval_results}
    assert results[('image-to-image', 'EN')].metric_value == 1.25
    assert results[('image-to-image', 'SD')].metric_value == 2.5
    assert results[('image-segmentation', 'mIoU')].metric_value == 0.125
    r = results[('image-to-image', 'EN')]
    assert (r.dataset_name, r.dataset_split, r.metric_config, r.verified) == ('MSRS', 'test', 'test-only', False)
    entry = published['entries'][NAME]
    text = card.text
    for needle in ('## Model details', '## Training', '## Results', '## Usage', '## Limitations', '## Citation',
                   "create_model('mtvif_iii.testonly', pretrained=True)", 'torch.hub.load', 'mtvif_zoo.fuse(',
                   entry['sha256'], 'SeAFusion (Tang et al., 2022)', 'Multi-Task Head',
                   CITATIONS['multitaskvif'], CITATIONS['seafusion'], 'hf-hub:test-org/mtvif_iii-testonly'):
        assert needle in text, needle
    sizes = entry['card']['sizes']
    assert f'{sizes["params"]:,}' in text and f'{sizes["macs_256_train"] / 1e9:.2f} G' in text


def test_card_is_regenerated_exactly_from_the_entry(published):
    for name, entry in published['entries'].items():
        assert (published['weights'] / name / 'README.md').read_text() == render_card(entry)
        assert (published['cards'] / f'{name}.md').read_text() == render_card(entry)


def _numbers(text):
    return set(re.findall(r'(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?', text))


def test_card_writes_no_number_it_was_not_given(published):
    """Every number in a card's prose and tables comes from the entry (the metadata the publisher
    gave + the sizes measured at publication); citations, hashes and the template's fixed
    references (256x256, arXiv 2505.06665, Sec. 3.3, Table 6, FLOPs / 2) are the only other digits."""
    import json
    entry = copy.deepcopy(published['entries'][NAME])
    entry['card']['results'] = [{'task': 'fusion', 'dataset': 'MSRS', 'split': 'test', 'convention': 'c',
                                 'metrics': {'EN': 6.789, 'Qabf': 0.4567}}]
    entry['card']['training'] = {'data': 'MSRS train', 'epochs': 123, 'batch_size': 7}
    text = render_card(entry)
    for bib in CITATIONS.values():
        text = text.replace(bib, '')
    text = re.sub(r'[0-9a-f]{12,64}', '', text)  # hashes
    body = text.split('---', 2)[2]
    sizes = entry['card']['sizes']
    given = _numbers(json.dumps(entry)) | {f'{v:,}' for v in sizes.values()} | {
        f'{sizes["macs_256_train"] / 1e9:.2f}', f'{sizes["macs_256_fusion"] / 1e9:.2f}'} | {
        f'{i["size"]:,}' for i in entry['files'].values()}
    for r in entry['card']['results']:  # metric tables show the given values rounded to 4 decimals
        given |= {f'{v:.4f}'.rstrip('0').rstrip('.') for v in r['metrics'].values() if isinstance(v, float)}
    template = {'256', '2505.06665', '3.3', '6', '2', '2022', '2023', '2024'}  # 2: MACs = FLOPs / 2
    assert _numbers(body) <= given | template, _numbers(body) - given - template
    for v in ('6.789', '0.4567', '123'):
        assert v in body


def test_missing_measurements_say_not_recorded(published):
    entry = copy.deepcopy(published['entries'][NAME])
    entry['card'] = card_block(published['models'][NAME], measured=entry['card']['sizes'])
    text = render_card(entry)
    assert 'model-index' not in text.split('---')[1]
    assert f'No measured results were supplied for this weight ({NOT_RECORDED})' in text
    assert f'**Budget**: {NOT_RECORDED}' in text
    from huggingface_hub import ModelCard
    assert ModelCard(text).data.eval_results is None


@pytest.mark.parametrize('bad, match', [
    ({'metrics': {'EN': None}}, 'finite number'), ({'metrics': {'EN': '6.7'}}, 'finite number'),
    ({'metrics': {'EN': float('inf')}}, 'finite number'), ({'metrics': {'EN': True}}, 'finite number'),
    ({'convention': ''}, 'convention'), ({'task': 'detection'}, 'task must be'),
])
def test_card_block_refuses_unmeasured_numbers(published, bad, match):
    result = {'task': 'fusion', 'dataset': 'MSRS', 'split': 'test', 'convention': 'c', 'metrics': {'EN': 1.0}}
    with pytest.raises(ValueError, match=match):
        card_block(published['models'][NAME], results=[{**result, **bad}], measured={'params': 1, 'params_fusion': 1,
                                                                                    'macs_256_train': 1,
                                                                                    'macs_256_fusion': 1})
    with pytest.raises(ValueError, match='unknown training fields'):
        card_block(published['models'][NAME], training={'gpus': 8})
    with pytest.raises(ValueError, match='finite number'):
        card_block(published['models'][NAME], training={'epochs': 'many'})


def test_model_card_sources(published, tmp_path):
    shipped = published['weights'] / NAME / 'README.md'
    text = shipped.read_text()
    assert model_card(NAME) == text and model_card('mtvif_iii') == text  # default tag
    # the model_cards/ copy of a checkout when the shipped one is missing
    import mtvif_zoo.hub.cards as cards
    cards_dir = tmp_path / 'model_cards'
    cards_dir.mkdir()
    shutil.copyfile(shipped, cards_dir / f'{NAME}.md')
    shutil.rmtree(published['weights'] / NAME)
    orig = cards.CARDS_DIR
    cards.CARDS_DIR = cards_dir
    try:
        assert model_card(NAME) == text
        (cards_dir / f'{NAME}.md').write_text(text.replace('Limitations', 'Limits'))  # edited by hand
        with pytest.raises(mtvif_zoo.hub.IntegrityError, match='model_cards copy'):
            model_card(NAME)
    finally:
        cards.CARDS_DIR = orig


def test_model_card_from_hub_url_and_paths(published, loopback, tmp_path):
    import mtvif_zoo.hub.cards as cards
    folder = published['weights'] / NAME
    text = (folder / 'README.md').read_text()
    assert loopback.add_repo('test-org/mtvif_iii-testonly', folder) == published['revision']
    shutil.rmtree(folder)
    orig, cards.CARDS_DIR = cards.CARDS_DIR, tmp_path / 'none'
    try:
        assert model_card(NAME) == text  # from the Hub, pinned revision, sha256 checked
        assert ('GET', f'/test-org/mtvif_iii-testonly/resolve/{published["revision"]}/README.md') in loopback.requests
    finally:
        cards.CARDS_DIR = orig
    assert model_card('hf-hub:test-org/mtvif_iii-testonly') == text
    url = loopback.add_file('card.md', text.encode())
    assert model_card(url) == text
    (tmp_path / 'c.md').write_text(text)
    assert model_card((tmp_path / 'c.md').as_uri()) == text and model_card(str(tmp_path / 'c.md')) == text


def test_cli_card_and_info(published, tmp_path, capsys):
    out = tmp_path / 'card.md'
    assert main(['card', NAME, '--out', str(out)]) == 0
    assert out.read_text() == (published['weights'] / NAME / 'README.md').read_text()
    assert main(['card', NAME]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith('---\n') and '\nlibrary_name: mtvif_zoo\n' in printed.split('\n---\n')[0]
    assert main(['info', NAME]) == 0
    printed = capsys.readouterr().out
    sizes = published['entries'][NAME]['card']['sizes']
    for needle in ('mtvif_iii.testonly', 'seafusion / mth', f'{sizes["params"] / 1e6:.3f} M',
                   'none (random initialisation, test only)', 'EN', '1.25', 'mIoU', '0.125', 'test-only'):
        assert needle in printed, needle
    assert main(['info', NAME, '--json']) == 0
    assert '"macs_256_fusion"' in capsys.readouterr().out
    assert main(['card', 'mtvif_ii.nope']) == 2
    assert 'no published weight' in capsys.readouterr().err


def test_card_summary_of_a_save_pretrained_card(tmp_path):
    import torch
    torch.manual_seed(0)
    m = mtvif_zoo.create_model('seafusion', in_chans=1)
    folder = mtvif_zoo.hub.save_pretrained(m, tmp_path / 's', name='seafusion.mine')
    info = card_summary(model_card(str(folder)))
    assert info['backbone'] == 'seafusion' and info['in_chans'] == 1 and info['metrics'] == []
    assert info['training_data'] == NOT_RECORDED


def test_card_is_built_from_modelcarddata_and_loads_back(published, tmp_path):
    """render_card goes through huggingface_hub (ModelCardData + ModelCard.from_template): the card
    written to a file loads back with ModelCard.load carrying the license, tags, datasets and every
    metric (as EvalResult) of the entry, and its data equals cards.card_data(entry)."""
    from huggingface_hub import ModelCard

    from mtvif_zoo.hub.cards import card_data
    entry = published['entries'][NAME]
    path = tmp_path / 'README.md'
    path.write_text(render_card(entry), encoding='utf-8')
    card = ModelCard.load(path)
    assert card.data.to_dict() == card_data(entry, NAME).to_dict()
    assert card.data.license == 'apache-2.0' and card.data.library_name == 'mtvif_zoo'
    assert card.data.datasets == ['none (random initialisation, test only)']
    assert {'image-fusion', 'mtvif_zoo', 'timm', 'safetensors', 'mtvif_iii', 'seafusion'} <= set(card.data.tags)
    got = sorted((r.task_type, r.dataset_name, r.dataset_split, r.metric_config, r.metric_name, r.metric_value)
                 for r in card.data.eval_results)
    want = sorted((('image-to-image' if r['task'] == 'fusion' else 'image-segmentation'), r['dataset'], r['split'],
                   r['convention'], k, v) for r in entry['card']['results'] for k, v in r['metrics'].items())
    assert got == want == sorted([('image-to-image', 'MSRS', 'test', 'test-only', 'EN', 1.25),
                                  ('image-to-image', 'MSRS', 'test', 'test-only', 'SD', 2.5),
                                  ('image-segmentation', 'MSRS', 'test', 'test-only', 'mIoU', 0.125)])
    assert card.data.mtvif_zoo['sha256'] == entry['sha256'] and card.data.model_name == NAME
    assert str(card) == render_card(entry)  # what ModelCard writes back is the card itself


def test_shipped_config_json_records_the_current_card():
    """After the cards were re-rendered, each shipped config.json records the card's current sha256
    (test_weight_registry checks the cards themselves are render_card of their entries)."""
    import json

    from mtvif_zoo.hub import registry
    from mtvif_zoo.hub.pretrained import sha256_file
    entries = registry.read_registry(registry.REGISTRY_PATH)
    if not entries:
        pytest.skip('no weights published in the package')
    for name in entries:
        folder = registry.SHIPPED_DIR / name
        cfg = json.loads((folder / 'config.json').read_text())
        assert cfg['mtvif_zoo']['files']['README.md'] == {'sha256': sha256_file(folder / 'README.md'),
                                                          'size': (folder / 'README.md').stat().st_size}, name
