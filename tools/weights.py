"""Train, evaluate and publish the zoo's own weights, and reproduce any of them from scratch.

The settings of every published weight are recorded in ``tools/weight_recipes.json``; this script
is the only way they are run, so a card's numbers can be regenerated with one command:

    python tools/weights.py reproduce mtvif_iii.mfnet220      # train from scratch + evaluate + print the table
    python tools/weights.py train mtvif_iii.mfnet220          # only train (runs/<name>/, resumable: --resume)
    python tools/weights.py evaluate mtvif_iii.mfnet220 seafusion.mfnet220 ...   # fuse + metrics + mIoU
    python tools/weights.py table                              # the comparison tables from results/
    python tools/weights.py publish mtvif_iii.mfnet220         # shipped weights + card + registry entry

``evaluate`` fuses every evaluation set with each model (``runs/<name>/best``), adds the pixel
average and the per-pixel maximum of the sources as references computed in the same run, and
scores everything with ``mtvif_zoo.evaluate`` in both metric conventions; the segmentation head
is scored by mIoU on the mfnet220 test split (one confusion matrix). Results go to
``results/<name>.json`` (per dataset and convention) and ``results/references.json``.

Data: ``../shared/data`` beside the repository (see its README); ``--data`` overrides. The sets
built by ``tools/prepare_data.py`` (``msrs_test361``: all 361 pairs of the MSRS test split; the
clean labelled, unlabelled and selection folders the newer recipes train on) are read from
``--prepared`` (``../data/mtvif``); a recipe names them ``prepared:<folder>``. The paper's
evaluation (Table 5 scale, 361 MSRS test pairs + TNO + RoadScene, references in the same run):

    python tools/weights.py evaluate NAME... --sets msrs_test361 tno25 roadscene50 --references
    python tools/weights.py evaluate --sets msrs_test361 tno25 roadscene50 --references   # references only
    python tools/weights.py table NAME... --sets msrs_test361
    python tools/weights.py gap NAME...          # next to the paper's Table 5 row, ratio per metric (MSS scale)
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / 'tools' / 'weight_recipes.json'
RESULTS = REPO / 'results'  # overridden by --results
RUNS = REPO / 'runs'
SHARED = REPO.parent / 'shared' / 'data'
PREPARED = REPO.parent / 'data' / 'mtvif'  # tools/prepare_data.py build --out

#: evaluation sets: name -> (visible dir, infrared dir, labels dir or None, stems list file or None)
EVAL_SETS = {
    'mfnet220_test': ('mfnet220/vi', 'mfnet220/ir', 'mfnet220/label', 'mfnet220/splits/test.txt'),
    'msrs_test20': ('msrs_test20/vi', 'msrs_test20/ir', None, None),
    'tno25': ('tno25/vi', 'tno25/ir', None, None),
    'roadscene50': ('roadscene50/vi', 'roadscene50/ir', None, None),
}
#: evaluation sets built by tools/prepare_data.py, under --prepared
PREPARED_SETS = {
    'msrs_test361': ('msrs_test361/vi', 'msrs_test361/ir', None, None),
}
ALL_SETS = list(EVAL_SETS) + list(PREPARED_SETS)
CONVENTIONS = ('paper', 'vifb')
PAPER_METRICS = ('EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'MS_SSIM', 'dE')  # Tables 4-5
#: the same seven on Table 5's scale: MSS is MS-SSIM with the paper convention's data range (mtvif_zoo.metrics)
TABLE5_METRICS = ('EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'MSS', 'dE')
#: unit conversions from the zoo's paper convention to Table 5's: its MI is in bits (the zoo's, like CDDFuse's
#: evaluator, in nats): SeAFusion's public outputs for the 361 MSRS test pairs score MI 2.794 nats = 4.031 bits
#: in `mtvif eval`, Table 5 gives 4.03 (and EN 6.65, VIF 0.97, Qabf 0.67, SSIM 0.99 match without conversion)
TABLE5_SCALE = {'MI': 1 / math.log(2)}
PAPER_TABLES = REPO.parent / 'shared' / 'paper' / 'tables.json'
TABLE5_ROW = {'mtvif_i': 'I', 'mtvif_ii': 'II', 'mtvif_iii': 'III', 'mtvif_iv': 'IV', 'seafusion': 'SeAFusion',
              'swinfusion': 'SwinFusion', 'emma_ufuser': 'EMMA', 'segmif': 'SegMiF'}
LOWER_IS_BETTER = {'dE'}


def recipes() -> Dict[str, dict]:
    return json.loads(RECIPES.read_text())


def recipe(name: str) -> dict:
    r = recipes()
    if name not in r:
        raise SystemExit(f'unknown weight {name!r}; recorded: {", ".join(r)}')
    return r[name]


def stages(name: str) -> List[dict]:
    """The training stages of a recipe: its ``train_args`` from scratch, then an optional ``finetune``
    stage that starts from the first stage's best weights (``--init-from``) with its own arguments."""
    r = recipe(name)
    out = [{'train_args': r['train_args'], 'budget': r['budget']}]
    if r.get('finetune'):
        out.append(r['finetune'])
    return out


def stage_dir(runs: Path, name: str, index: int, count: int) -> Path:
    """``runs/<name>`` holds the final stage (the one evaluated and published), ``runs/<name>.stage1``
    the first stage of a two-stage recipe."""
    return runs / name if index == count - 1 else runs / f'{name}.stage{index + 1}'


def data_path(spec: str, data: Path, prepared: Path = PREPARED) -> Path:
    """A recipe's folder: ``prepared:<folder>`` under ``--prepared``, anything else under ``--data``."""
    return prepared / spec[len('prepared:'):] if spec.startswith('prepared:') else data / spec


def train_command(name: str, data: Path, runs: Path, index: int = 0, resume: bool = False,
                  prepared: Path = PREPARED) -> List[str]:
    r, st = recipe(name), stages(name)
    out = stage_dir(runs, name, index, len(st))
    cmd = [sys.executable, '-m', 'mtvif_zoo.cli', 'train', '--model', r['model'],
           '--data', str(data_path(r['data'], data, prepared)), '--out', str(out), '--no-progress']
    for key, flag in (('unlabelled', '--unlabelled'), ('select_on', '--select-on')):
        if r.get(key):
            cmd += [flag, str(data_path(r[key], data, prepared))]
    cmd += [str(a) for a in st[index]['train_args']]
    if index:
        cmd += ['--init-from', str(stage_dir(runs, name, index - 1, len(st)) / 'best' / 'model.safetensors')]
    return cmd + (['--resume'] if resume else [])


def cmd_train(args) -> int:
    for name in args.names:
        st = stages(name)
        for i in range(len(st)):
            out = stage_dir(Path(args.runs), name, i, len(st))
            if args.resume and (out / 'best' / 'model.safetensors').exists() and i < len(st) - 1 \
                    and (out / 'wall_time_s.txt').exists():
                continue  # a finished earlier stage
            resume = args.resume and (out / 'last').exists()
            cmd = train_command(name, Path(args.data), Path(args.runs), i, resume=resume,
                                prepared=Path(getattr(args, 'prepared', PREPARED)))
            print('+', ' '.join(cmd), flush=True)
            t0 = time.time()
            rc = subprocess.call(cmd, cwd=REPO)
            if rc:
                return rc
            if not resume:
                (out / 'wall_time_s.txt').write_text(f'{time.time() - t0:.0f}\n')
    return 0


def _subset_dir(root: Path, vis: str, ir: str, labels, stems_file) -> Dict[str, Path]:
    """The evaluation set as folders (a temporary folder of links when a split list selects stems)."""
    vis_d, ir_d = root / vis, root / ir
    lab_d = root / labels if labels else None
    if not stems_file:
        return {'vis': vis_d, 'ir': ir_d, 'labels': lab_d}
    stems = [s.strip() for s in (root / stems_file).read_text().split() if s.strip()]
    tmp = Path(tempfile.mkdtemp(prefix='mtvif_eval_'))
    out = {}
    for key, d in (('vis', vis_d), ('ir', ir_d), ('labels', lab_d)):
        if d is None:
            out[key] = None
            continue
        (tmp / key).mkdir()
        by_stem = {p.stem: p for p in d.iterdir()}
        for s in stems:
            (tmp / key / by_stem[s].name).symlink_to(by_stem[s].resolve())
        out[key] = tmp / key
    return out


def _load(name: str, runs: Path, published: bool):
    import mtvif_zoo
    from mtvif_zoo.train.export import model_from_checkpoint
    if published:  # the shipped full multi-task weights (fusion + segmentation head)
        return mtvif_zoo.create_model(name, pretrained=True,
                                      pretrained_cfg_overlay=dict(hf_hub_filename='model_full.safetensors')).eval()
    model, _ = model_from_checkpoint(runs / name / 'best')
    return model


def cmd_evaluate(args) -> int:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    import mtvif_zoo
    from mtvif_zoo.evaluate import evaluate
    from mtvif_zoo.fusion import load_image
    from mtvif_zoo.metrics import ConfusionMatrix

    torch.set_num_threads(args.threads)
    root, runs = Path(args.data), Path(args.runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    prepared = Path(getattr(args, 'prepared', PREPARED))
    sets = {k: _subset_dir(root, *v) for k, v in EVAL_SETS.items() if k in args.sets}
    for k, v in PREPARED_SETS.items():
        if k in args.sets:
            if not (prepared / v[0]).is_dir():
                raise SystemExit(f'{prepared / v[0]} not found: build it with `python tools/prepare_data.py build '
                                 f'--mirror MIRRORS --out {prepared}` (or pass --prepared)')
            sets[k] = _subset_dir(prepared, *v)
    for name in args.names:
        model = _load(name, runs, args.published)
        old = RESULTS / f'{name}.json'  # other datasets evaluated earlier are kept
        res = json.loads(old.read_text()) if old.is_file() else {}
        res.update({'name': name, 'datasets': res.get('datasets', {}), 'segmentation': res.get('segmentation')})
        t_fuse = 0.0
        for ds, dirs in sets.items():
            fused_dir = RESULTS / 'fused' / ds / name
            fused_dir.mkdir(parents=True, exist_ok=True)
            vis = {p.stem: p for p in sorted(dirs['vis'].iterdir())}
            ir = {p.stem: p for p in sorted(dirs['ir'].iterdir())}
            t0 = time.time()
            for stem in tqdm(sorted(set(vis) & set(ir)), desc=f'{name} fuse {ds}', disable=args.quiet):
                dst = fused_dir / f'{stem}.png'
                if dst.exists() and not args.refuse:
                    continue
                mtvif_zoo.fuse(vis[stem], ir[stem], model=model).save(dst)
            t_fuse += time.time() - t0
            res['datasets'][ds] = {}
            for conv in CONVENTIONS:
                r = evaluate([fused_dir], dirs['vis'], dirs['ir'], convention=conv, progress=False,
                             workers=args.threads)
                per_image = {}
                for row in r.rows:  # what tests/test_published_weights.py re-measures on a few pairs
                    per_image[row['image']] = {k: row[k] for k in r.metrics if k in row}
                res['datasets'][ds][conv] = {'n': r.counts[name], 'means': r.summary[name],
                                             'problems': r.problems, 'notes': r.notes,
                                             'per_image': dict(sorted(per_image.items()))}
            if dirs['labels'] is not None and model.has_segmentation:
                cm = ConfusionMatrix(model.num_classes, class_names=list(mtvif_zoo.MSRS_CLASSES))
                labels = {p.stem: p for p in dirs['labels'].iterdir()}
                for stem in tqdm(sorted(set(vis) & set(ir) & set(labels)), desc=f'{name} segment {ds}',
                                 disable=args.quiet):
                    pred = mtvif_zoo.segment(vis[stem], ir[stem], model=model)
                    cm.update(torch.from_numpy(pred.astype(np.int64)),
                              torch.from_numpy(load_image(labels[stem], 'label').astype(np.int64)))
                seg = cm.compute().to_dict()
                res['segmentation'] = {'dataset': ds,
                                       **{k: seg[k] for k in ('mIoU', 'IoU', 'absent_classes', 'pixel_accuracy')
                                          if k in seg}}
        res['fuse_seconds'] = round(t_fuse, 1)
        (RESULTS / f'{name}.json').write_text(json.dumps(res, indent=1, default=float))
        print(f'wrote {RESULTS / (name + ".json")}', flush=True)
    if args.references:
        ref_file = RESULTS / 'references.json'  # other datasets evaluated earlier are kept
        refs = json.loads(ref_file.read_text()) if ref_file.is_file() else {}
        for ds, dirs in sets.items():
            refs[ds] = {}
            for conv in CONVENTIONS:
                r = evaluate(None, dirs['vis'], dirs['ir'], convention=conv, progress=False,
                             references=['average', 'max'], workers=args.threads)
                refs[ds][conv] = {m: {'n': r.counts[m], 'means': r.summary[m]} for m in r.summary}
        (RESULTS / 'references.json').write_text(json.dumps(refs, indent=1, default=float))
        print(f'wrote {RESULTS / "references.json"}')
    return 0


def _fmt(v) -> str:
    return '-' if v is None else (f'{v:.3f}' if isinstance(v, float) else str(v))


def comparison_table(names: List[str], ds: str = 'msrs_test20', conv: str = 'paper',
                     metrics=PAPER_METRICS) -> str:
    """Markdown: models vs the average / max references on one dataset and convention."""
    refs = json.loads((RESULTS / 'references.json').read_text())[ds][conv]
    rows = []
    avg = refs['average (reference)']['means']
    for name in names:
        p = RESULTS / f'{name}.json'
        if not p.exists():
            continue
        r = json.loads(p.read_text())
        means = r['datasets'][ds][conv]['means']
        wins = sum(1 for k in PAPER_METRICS if (means[k] < avg[k] if k in LOWER_IS_BETTER else means[k] > avg[k]))
        seg = r.get('segmentation') or {}
        rows.append((name, means, wins, seg.get('mIoU')))
    for ref in ('average (reference)', 'max (reference)'):
        rows.append((ref, refs[ref]['means'], None, None))
    head = '| model | ' + ' | '.join(metrics) + ' | beats average on | mIoU (mfnet220 test) |'
    lines = [head, '|' + ' --- |' * (len(metrics) + 3)]
    for name, means, wins, miou in rows:
        lines.append(f'| {name} | ' + ' | '.join(_fmt(means.get(k)) for k in metrics) +
                     f' | {"-" if wins is None else f"{wins} / {len(PAPER_METRICS)}"} | {_fmt(miou)} |')
    return '\n'.join(lines)


def gap_table(names: List[str], ds: str = 'msrs_test361', tables: Path = PAPER_TABLES) -> str:
    """Markdown: each weight's means (paper convention) next to the paper's Table 5 row of the same model, the
    per-metric ratio weight / paper, and the references scored in the same evaluation. The paper's values are
    copied from the paper (``../shared/paper/tables.json``), not measured."""
    t5 = json.loads(Path(tables).read_text())['table5_msrs_fusion']
    refs = json.loads((RESULTS / 'references.json').read_text()).get(ds, {}).get('paper', {})
    m = TABLE5_METRICS
    lines = ['| row | ' + ' | '.join(k + (' (bits)' if k == 'MI' else '') for k in m) + ' |',
             '|' + ' --- |' * (len(m) + 1)]

    def row(label, vals):
        lines.append(f'| {label} | ' + ' | '.join(_fmt(vals.get(k)) for k in m) + ' |')

    def scaled(vals):  # the zoo's units -> Table 5's
        return {k: (float(v) * TABLE5_SCALE.get(k, 1.0) if v is not None else None) for k, v in vals.items()}

    for name in names:
        p = RESULTS / f'{name}.json'
        if not p.exists() or ds not in json.loads(p.read_text())['datasets']:
            raise SystemExit(f'{p}: no {ds} evaluation; '
                             f'run `tools/weights.py evaluate {name} --sets {ds} --references`')
        means = scaled(json.loads(p.read_text())['datasets'][ds]['paper']['means'])
        paper = t5.get(TABLE5_ROW.get(name.split('.')[0], ''))
        if paper:  # the paper's MSS column is stored as MS_SSIM in tables.json
            paper = dict(paper, MSS=paper.get('MSS', paper.get('MS_SSIM')))
        row(f'{name} (measured, {ds})', means)
        if paper:
            row(f'paper Table 5, {TABLE5_ROW[name.split(".")[0]]} (copied from the paper)', paper)
            row('ratio measured / paper' + ' (dE: lower is better)',
                {k: (float(means[k]) / paper[k] if means.get(k) is not None and paper.get(k) else None) for k in m})
    for ref in ('average (reference)', 'max (reference)'):
        if ref in refs:
            row(f'{ref} (measured, {ds})', scaled(refs[ref]['means']))
    return '\n'.join(lines)


def cmd_gap(args) -> int:
    print(gap_table(args.names, args.set, Path(args.tables)))
    return 0


def cmd_table(args) -> int:
    names = args.names or list(recipes())
    for ds in args.sets:
        for conv in CONVENTIONS:
            print(f'\n### {ds}, convention `{conv}`' + (' (dE: lower is better)' if conv else '') + '\n')
            print(comparison_table(names, ds, conv))
    return 0


def _results_for_card(name: str) -> List[dict]:
    r = json.loads((RESULTS / f'{name}.json').read_text())
    out = []
    pretty = {'mfnet220_test': ('MFNet (mfnet220)', 'test (20 pairs)'), 'msrs_test20': ('MSRS', 'test (20 pairs)'),
              'tno25': ('TNO', '25 pairs'), 'roadscene50': ('RoadScene', '50 pairs')}
    for ds, convs in r['datasets'].items():
        for conv, v in convs.items():
            metrics = {k: float(v['means'][k]) for k in PAPER_METRICS + ('SD', 'SF', 'AG', 'SCD', 'PSNR')
                       if v['means'].get(k) is not None}
            out.append({'task': 'fusion', 'dataset': pretty[ds][0], 'split': pretty[ds][1], 'convention': conv,
                        'metrics': metrics, 'source': f'python tools/weights.py evaluate {name}'})
    if r.get('segmentation'):
        out.append({'task': 'segmentation', 'dataset': 'MFNet (mfnet220)', 'split': 'test (20 pairs)',
                    'convention': 'mIoU over 9 classes, one confusion matrix',
                    'metrics': {'mIoU': float(r['segmentation']['mIoU'])},
                    'source': f'python tools/weights.py evaluate {name}'})
    return out


def _git_head() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def cmd_publish(args) -> int:
    import mtvif_zoo
    from mtvif_zoo.hub import publish_weight
    from mtvif_zoo.train.export import model_from_checkpoint
    for name in args.names:
        rec = recipe(name)
        runs, st = Path(args.runs), stages(name)
        model, state = model_from_checkpoint(runs / name / 'best')
        cfg = state['config']
        steps, wall = 0, 0.0
        for i in range(len(st)):  # every stage's steps and logged per-epoch wall times
            d = stage_dir(runs, name, i, len(st))
            epochs = {}
            for line in (d / 'log.jsonl').read_text().splitlines():
                e = json.loads(line)
                epochs[e['epoch']] = e
            wall += sum(e.get('epoch_time_s') or 0.0 for e in epochs.values())
            # each stage continues from the previous stage's best checkpoint
            steps += int(json.loads((d / 'best' / 'state.json').read_text())['global_step'])
        lrs = []
        for x in st:
            a = [str(v) for v in x['train_args']]
            lrs.append(a[a.index('--lr') + 1] if '--lr' in a else '?')
        optim = (f"Adam, {cfg['scheduler']} schedule from lr {' then '.join(lrs)}"
                 f"{' (stage 1, stage 2)' if len(st) > 1 else ''}, grad clip {cfg['grad_clip']}")
        training = {
            'data': f"{rec['data']} (MFNet, RTFNet's preprocessing; ../shared/data/{rec['data']} in the project): "
                    "splits/train.txt (180 pairs), validation splits/val.txt (20 pairs)",
            'iterations': steps,
            'batch_size': int(cfg['batch_size']), 'crop': int(cfg['crop']),
            'optimizer': optim,
            'augmentation': f"random crops, horizontal flips (p={cfg.get('hflip')})"
                            + (f", infrared gain U{tuple(cfg['ir_gain'])}" if cfg.get('ir_gain') else '')
                            + (f", visible gain U{tuple(cfg['vis_gain'])}" if cfg.get('vis_gain') else '')
                            + (' (the gains in stage 2 only)' if len(st) > 1 and (cfg.get('ir_gain') or
                                                                                  cfg.get('vis_gain')) else ''),
            'losses': 'Eq. 2-3 with (beta1, beta2, lambda1..4) = (1, 1, 20, 20, 10, 20)'
                      + ('' if model.has_segmentation else '; no L_seg (no segmentation head)'),
            'hardware': rec['hardware'], 'seed': int(cfg['seed']),
            'budget': ' '.join(f'stage {i + 1}: {x["budget"]}.' for i, x in enumerate(st))
                      + (f' The published weights are the best by validation loss, after {steps} steps in all.'
                         if len(st) > 1 else '')
                      + f' Wall time {wall / 60:.0f} min (sum of the logged epoch times).',
            'code': f"mtvif_zoo {mtvif_zoo.__version__} at commit {_git_head()}; "
                    f"retrain and re-evaluate: python tools/weights.py reproduce {name}",
        }
        limitations = [
            'Trained on 180 raw-thermal MFNet pairs (mfnet220 train split) on a 2-core CPU for a few hundred steps, '
            'not on the paper\'s MSRS/FMB with 100 epochs: expect lower fusion and much lower segmentation quality '
            'than the paper reports.',
            'The segmentation head is trained only as the multi-task regulariser; its mIoU is far from a usable '
            'segmenter.',
            'Inputs: RGB visible + infrared (replicated to 3 channels), values in [0, 1]; other sensors, '
            'resolutions and scenes than MFNet road scenes are out of distribution.',
        ]
        entry = publish_weight(model, name, dataset=rec['dataset'], results=_results_for_card(name),
                               training=training, label_names=list(model.pretrained_cfg.get('label_names') or [])
                               or None, limitations=limitations, description=rec.get('description'),
                               datasets=['mfnet'], full_copy='float16', overwrite=args.overwrite,
                               url_base=args.url_base)
        print(f'published {name}: sha256 {entry["sha256"]}')
    return 0


def cmd_reproduce(args) -> int:
    """Retrain from scratch into a fresh folder, evaluate there, print the same table as published."""
    global RESULTS
    with tempfile.TemporaryDirectory(prefix='mtvif_repro_') as tmp:
        runs = Path(tmp) / 'runs'
        RESULTS = Path(args.out) if args.out else Path(tmp) / 'results'
        ns = argparse.Namespace(names=[args.name], data=args.data, runs=str(runs), resume=False)
        rc = cmd_train(ns)
        if rc:
            return rc
        ev = argparse.Namespace(names=[args.name], data=args.data, runs=str(runs), threads=args.threads,
                                sets=list(EVAL_SETS), quiet=False, references=True, refuse=True, published=False)
        cmd_evaluate(ev)
        print(comparison_table([args.name]))
    return 0


def main(argv=None) -> int:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default=str(SHARED), help='the shared data folder [../shared/data]')
    ap.add_argument('--runs', default=str(RUNS), help='training runs folder [runs/]')
    ap.add_argument('--results', default=str(RESULTS), help='evaluation results folder [results/]')
    ap.add_argument('--prepared', default=str(PREPARED), help='folders built by tools/prepare_data.py [../data/mtvif]')
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('train')
    p.add_argument('names', nargs='+')
    p.add_argument('--resume', action='store_true')
    p.set_defaults(func=cmd_train)
    p = sub.add_parser('evaluate')
    p.add_argument('names', nargs='*')
    p.add_argument('--sets', nargs='+', default=list(EVAL_SETS), choices=ALL_SETS,
                   help='evaluation sets [the shared ones]; msrs_test361 (all 361 MSRS test pairs) needs --prepared')
    p.add_argument('--threads', type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument('--references', action='store_true', help='also score the average / max references')
    p.add_argument('--published', action='store_true', help='evaluate the shipped weights instead of runs/')
    p.add_argument('--refuse', action='store_true', help='re-fuse even when fused images exist')
    p.add_argument('-q', '--quiet', action='store_true')
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser('table')
    p.add_argument('names', nargs='*')
    p.add_argument('--sets', nargs='+', default=['msrs_test20'], choices=ALL_SETS)
    p.set_defaults(func=cmd_table)
    p = sub.add_parser('gap', help="weights next to the paper's Table 5 row of the same model, with the ratio")
    p.add_argument('names', nargs='+')
    p.add_argument('--set', default='msrs_test361', choices=ALL_SETS)
    p.add_argument('--tables', default=str(PAPER_TABLES), help='the paper tables JSON [../shared/paper/tables.json]')
    p.set_defaults(func=cmd_gap)
    p = sub.add_parser('publish')
    p.add_argument('names', nargs='+')
    p.add_argument('--overwrite', action='store_true')
    p.add_argument('--url-base', help='release download URL the sha-named files will be attached to')
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser('reproduce')
    p.add_argument('name')
    p.add_argument('--out', help='keep the results here (default: a temporary folder)')
    p.add_argument('--threads', type=int, default=max(1, (os.cpu_count() or 1)))
    p.set_defaults(func=cmd_reproduce)
    args = ap.parse_args(argv)
    RESULTS = Path(args.results)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
