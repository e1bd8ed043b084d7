"""Build the training / selection / evaluation folders of the new weights' recipe from local copies.

This script never downloads anything. It reads the files listed in ``tools/data_manifest.json``
(repository, commit, path and sha256 of every file a recipe uses) from a folder the user gives
(``--mirror``), checks every file's sha256, and writes plain ``vi/ ir/ [label/ splits/]`` folders:

    python tools/prepare_data.py build --mirror MIRRORS --shared ../shared/data --out ../data/mtvif
    python tools/prepare_data.py verify --mirror MIRRORS          # hashes only, writes nothing
    python tools/prepare_data.py manifest --mirror MIRRORS --shared ../shared/data   # (re)write the manifest

``MIRRORS`` holds one copy per repository, found as any of ``MIRRORS/<owner>+<name>/repo``,
``MIRRORS/<owner>+<name>``, ``MIRRORS/<owner>/<name>`` or ``MIRRORS/<name>``: either a git directory
(bare clone or a checkout's ``.git``; files are read from the recorded commit with ``git cat-file``)
or a plain folder (a download / extracted archive; files are read at their recorded paths). The
labelled MFNet pairs come from ``--shared`` (``../shared/data/mfnet220``, see its README); their
hashes are in the manifest too.

Output folders (``--out``; keep them outside the repository, never commit the images):

``mfnet220_clean/``  labelled training data: the 170 MFNet pairs of ``mfnet220/splits/clean`` (train
                     137, val 17, test 16: the old splits minus the 50 MSRS test scenes), with
                     ``splits/{train,val,test}.txt`` -- ``mtvif train --data``.
``unlabelled/``      unlabelled training pairs (``mtvif train --unlabelled``): RoadScene (221),
                     TNO (42) and the LLVIP sample (44), names prefixed ``roadscene_``, ``tno_``,
                     ``llvip_``; a pair is dropped when either image's decoded pixels equal an image
                     of the evaluation sets ``tno25`` / ``roadscene50`` (grey images stored as RGB
                     count as grey) or when its shorter side is under ``--min-side`` (256: the
                     recipes' crop). LLVIP: non-commercial licence (see the manifest).
``msrs_train30/``    the selection set (``mtvif train --select-on``): 30 MSRS *train* pairs.
``msrs_test361/``    evaluation only: the 361 pairs of the MSRS test split.

Every training, validation, unlabelled and selection file name is checked against the 361 MSRS
test names (``mtvif_zoo/data/msrs_test_names.txt``); a match stops the build. ``--out`` gets a
``prepare_report.json`` listing what was written and every dropped file with the reason.
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / 'tools' / 'data_manifest.json'
NAMES = REPO / 'mtvif_zoo' / 'data' / 'msrs_test_names.txt'
IMAGE_EXT = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

#: what the manifest records (``manifest`` lists the files of each source at its commit)
SOURCES = {
    'msrs_test361': dict(
        repo='ycc568/my-seafusion', commit='cff58e5c005f5b189010b5de5f5869277852dfa8',
        dirs={'vi': 'datasets/test_imgs/vi', 'ir': 'datasets/test_imgs/ir'}, prefix='', use='evaluation',
        what='MSRS test split (Tang et al., Information Fusion 2022), 361 pairs, 640x480; evaluation only',
        licence='repository: MIT (LICENSE, Linfeng Tang 2023); MSRS data: no separate licence stated'),
    'msrs_train30': dict(
        repo='Linfeng-Tang/SuperFusion', commit='0dbd4153df307c31b06c2e37a7d9a867cb8893c7',
        dirs={'vi': 'dataset/train/MSRS/vi', 'ir': 'dataset/train/MSRS/ir'}, prefix='', use='selection',
        what='30 pairs of the MSRS train split (no labels): the MSRS-domain selection set',
        licence='repository: MIT (LICENSE, Linfeng Tang 2022); MSRS data: no separate licence stated'),
    'roadscene': dict(
        repo='hanna-xu/RoadScene', commit='ab71420f8fc96396eeb97eecf3694909b3feb656',
        dirs={'vi': 'crop_LR_visible', 'ir': 'cropinfrared'}, prefix='roadscene_', use='unlabelled',
        what='RoadScene (Xu et al., AAAI 2020, FusionDN), 221 aligned pairs cropped from FLIR ADAS video',
        licence='no licence file in the repository; frames derived from the FLIR ADAS dataset (FLIR terms)'),
    'tno': dict(
        repo='Linfeng-Tang/Image-Fusion', commit='dba5bf3d507e09227993ca9743776bf05ce35c51',
        dirs={'vi': 'General Evaluation Metric/Image/Source-Image/TNO/vi',
              'ir': 'General Evaluation Metric/Image/Source-Image/TNO/ir'}, prefix='tno_', use='unlabelled',
        what='TNO image fusion dataset (Toet), 42 pairs as shipped with this evaluation toolbox',
        licence='no licence file in the repository; TNO Image Fusion Dataset (A. Toet): see its distributor\'s terms'),
    'llvip': dict(
        repo='bupt-ai-cz/LLVIP', commit='60cdc80b47dd175c15ba849222126cbab89e7ff1',
        dirs={'vi': ['FusionGAN/Train_LLVIP_vi', 'FusionGAN/Test_LLVIP_vi'],
              'ir': ['FusionGAN/Train_LLVIP_ir', 'FusionGAN/Test_LLVIP_ir']}, prefix='llvip_', use='unlabelled',
        what='LLVIP sample (Jia et al., ICCVW 2021), 44 pairs at 1280x1024',
        licence='NON-COMMERCIAL: "made freely available ... for non-commercial purposes such as academic research" '
                '("Term of Use and License.md"); weights trained on it inherit the restriction -- '
                'say so in their card'),
}
MFNET = dict(repo='QPQQQQ/multisource', commit='cf53b947a4d102cef0543e2d11e39ac5dff7dea6',
             what='MFNet RGB-thermal (Ha et al., IROS 2017), RTFNet preprocessing, 9 classes; read from '
                  '../shared/data/mfnet220 (its README names the source paths dataset/seperated_images, '
                  'dataset/labels)',
             licence='see ../shared/data/README.md (MFNet: academic use)')
EVAL_DEDUP = ('tno25', 'roadscene50')


class PrepareError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- reading sources
class Mirror:
    """One repository's copy: a git directory (read at a commit) or a plain folder (read by path)."""

    def __init__(self, root: Path, repo: str):
        owner, name = repo.split('/')
        cands = [root / f'{owner}+{name}' / 'repo', root / f'{owner}+{name}', root / owner / name, root / name]
        self.git = self.folder = None
        for c in cands:
            if not c.is_dir():
                continue
            if (c / 'HEAD').is_file() and (c / 'objects').is_dir():
                self.git = c
            elif (c / '.git').exists():
                self.git = c / '.git'
                self.folder = c
            else:
                self.folder = c
            break
        if self.git is None and self.folder is None:
            raise PrepareError(f'no copy of {repo} under {str(root)!r} (looked for ' +
                               ', '.join(str(c) for c in cands) + '); clone or download it there')
        self.repo = repo

    def _git(self, *args, text=False) -> bytes:
        r = subprocess.run(['git', '--git-dir', str(self.git), *args], capture_output=True, text=text)
        if r.returncode:
            raise PrepareError(f'{self.repo}: git {" ".join(args)} failed: {r.stderr.strip() if text else r.stderr}')
        return r.stdout

    def list(self, commit: str, folder: str) -> List[str]:
        if self.git is not None:
            out = self._git('ls-tree', '-r', '--name-only', commit, '--', folder, text=True)
            paths = [p for p in out.split('\n') if p]
        else:
            base = self.folder / folder
            paths = [str(p.relative_to(self.folder)) for p in sorted(base.rglob('*')) if p.is_file()]
        return sorted(p for p in paths if p.lower().endswith(IMAGE_EXT) and '.ipynb_checkpoints' not in p.split('/')
                      and os.path.dirname(p) == folder)

    def read(self, commit: str, path: str) -> bytes:
        if self.git is not None:
            try:
                return self._git('cat-file', 'blob', f'{commit}:{path}')
            except PrepareError:
                if self.folder is None:
                    raise PrepareError(f'{self.repo}: {path} not found at commit {commit} '
                                       '(is the copy that old?)') from None
        p = self.folder / path
        if not p.is_file():
            raise PrepareError(f'{self.repo}: file {path} not found in {str(self.folder)!r}')
        return p.read_bytes()


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def content_hash(data: bytes) -> str:
    """sha256 of the decoded pixels (alpha dropped; an RGB image whose channels are equal counts as grey)."""
    import numpy as np
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        a = np.asarray(im)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and (a == a[..., :1]).all():
        a = a[..., 0]
    return sha256(str((a.shape, str(a.dtype))).encode() + np.ascontiguousarray(a).tobytes())


def image_size(data: bytes):
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return im.size  # (W, H)


def msrs_test_names() -> set:
    return {s.strip() for s in NAMES.read_text().splitlines() if s.strip()}


# ------------------------------------------------------------------------------------------- manifest
def _source_files(m: Mirror, src: dict) -> Dict[str, List[str]]:
    out = {}
    for role, dirs in src['dirs'].items():
        dirs = [dirs] if isinstance(dirs, str) else dirs
        out[role] = [p for d in dirs for p in m.list(src['commit'], d)]
    return out


def _dump(man: dict) -> str:
    """JSON with one pair per line (readable diffs, a third of the indented size)."""
    marks = {}

    def mark(obj):
        if isinstance(obj, dict) and 'stem' in obj:
            key = f'@@{len(marks)}@@'
            marks[key] = json.dumps(obj, separators=(',', ':'))
            return key
        if isinstance(obj, dict):
            return {k: mark(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [mark(v) for v in obj]
        return obj

    text = json.dumps(mark(man), indent=1)
    for key, val in marks.items():
        text = text.replace(f'"{key}"', val)
    return text + '\n'


def cmd_manifest(args) -> int:
    mirror, shared = Path(args.mirror), Path(args.shared)
    man = {'format': 'mtvif_zoo data manifest 1',
           'about': 'every file the data recipe (tools/prepare_data.py) uses: repository, commit, path, sha256 of the '
                    'file bytes; pairs are matched by file stem. Built by `python tools/prepare_data.py manifest`.',
           'sources': {}, 'mfnet220_clean': None}
    for key, src in SOURCES.items():
        m = Mirror(mirror, src['repo'])
        files = _source_files(m, src)
        stems = {role: {Path(p).stem: p for p in ps} for role, ps in files.items()}
        common = sorted(set(stems['vi']) & set(stems['ir']))
        unpaired = sorted(set(stems['vi']) ^ set(stems['ir']))
        pairs = []
        for s in common:
            entry = {'stem': s}
            for role in ('vi', 'ir'):
                data = m.read(src['commit'], stems[role][s])
                w, h = image_size(data)
                entry[role] = {'path': stems[role][s], 'sha256': sha256(data), 'size': [w, h]}
            pairs.append(entry)
        man['sources'][key] = {k: v for k, v in src.items() if k != 'dirs'} | {
            'dirs': src['dirs'], 'pairs': pairs, 'unpaired_skipped': unpaired}
        print(f'{key}: {len(pairs)} pairs from {src["repo"]}@{src["commit"][:10]}'
              + (f' ({len(unpaired)} unpaired skipped: {unpaired[:5]})' if unpaired else ''), flush=True)
    root = shared / 'mfnet220'
    splits = {name: [s for s in (root / 'splits' / 'clean' / f'{name}.txt').read_text().split() if s]
              for name in ('train', 'val', 'test')}
    pairs = []
    for s in sorted({x for v in splits.values() for x in v}):
        entry = {'stem': s}
        for role, d in (('vi', 'vi'), ('ir', 'ir'), ('label', 'label')):
            p = root / d / f'{s}.png'
            entry[role] = {'path': f'mfnet220/{d}/{s}.png', 'sha256': sha256(p.read_bytes())}
        pairs.append(entry)
    man['mfnet220_clean'] = dict(MFNET, splits=splits, pairs=pairs)
    MANIFEST.write_text(_dump(man))
    print(f'wrote {MANIFEST}')
    return 0


# ------------------------------------------------------------------------------------------- build
def _load_manifest(path: Optional[Path] = None) -> dict:
    path = Path(path or MANIFEST)
    if not path.is_file():
        raise PrepareError(f'{path} not found')
    return json.loads(path.read_text())


def _eval_hashes(shared: Path) -> Dict[str, str]:
    out = {}
    for name in EVAL_DEDUP:
        for role in ('vi', 'ir'):
            d = shared / name / role
            if not d.is_dir():
                raise PrepareError(f'evaluation set {d} not found: needed to drop its images from the training '
                                   'data (--shared)')
            for p in sorted(d.iterdir()):
                if p.suffix.lower() in IMAGE_EXT:
                    out.setdefault(content_hash(p.read_bytes()), f'{name}/{role}/{p.name}')
    return out


def _checked(m: Mirror, commit: str, f: dict, repo: str) -> bytes:
    data = m.read(commit, f['path'])
    got = sha256(data)
    if got != f['sha256']:
        raise PrepareError(f'{repo}@{commit[:10]}: {f["path"]}: sha256 {got} differs from the manifest\'s '
                           f'{f["sha256"]}: wrong or modified copy')
    return data


def _write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build(mirror: Path, shared: Optional[Path], out: Optional[Path], min_side: int = 256,
          sets=None, manifest: Optional[Path] = None) -> dict:
    """Verify every file (and write the folders when ``out`` is given); returns the report dict."""
    man = _load_manifest(manifest)
    names = msrs_test_names()
    if out is not None and (REPO in out.resolve().parents or out.resolve() == REPO):
        raise PrepareError(f'--out {str(out)!r} is inside the repository: write the images elsewhere')
    eval_hashes = _eval_hashes(shared) if (shared is not None and out is not None) else None
    report = {'sets': {}, 'dropped': [], 'min_side': min_side}
    wanted = set(sets or ['msrs_test361', 'msrs_train30', 'unlabelled', 'mfnet220_clean'])
    for key, src in man['sources'].items():
        target = {'evaluation': 'msrs_test361', 'selection': 'msrs_train30', 'unlabelled': 'unlabelled'}[src['use']]
        if target not in wanted:
            continue
        m = Mirror(mirror, src['repo'])
        n = 0
        for pair in src['pairs']:
            stem = pair['stem']
            if src['use'] != 'evaluation' and stem in names:
                raise PrepareError(f'{src["repo"]}: {pair["vi"]["path"]} carries the MSRS test name {stem!r}: '
                                   f'refused for {src["use"]} data')
            if src['use'] == 'evaluation' and stem not in names:
                raise PrepareError(f'{src["repo"]}: {stem!r} is not an MSRS test name')
            blobs = {role: _checked(m, src['commit'], pair[role], src['repo']) for role in ('vi', 'ir')}
            if out is None:
                n += 1
                continue
            if src['use'] == 'unlabelled':
                dup = [(role, eval_hashes[h]) for role in ('vi', 'ir')
                       if (h := content_hash(blobs[role])) in eval_hashes] if eval_hashes is not None else []
                if dup:
                    report['dropped'].append({'source': key, 'stem': stem, 'reason': 'equal to evaluation image ' +
                                              ', '.join(f'{r}: {e}' for r, e in dup)})
                    continue
                w, h = pair['vi']['size']
                if min(w, h) < min_side:
                    report['dropped'].append({'source': key, 'stem': stem,
                                              'reason': f'{w}x{h} has a side under --min-side {min_side}'})
                    continue
            for role in ('vi', 'ir'):
                ext = Path(pair[role]['path']).suffix.lower()
                _write(out / target / role / f'{src["prefix"]}{stem}{ext}', blobs[role])
            n += 1
        report['sets'].setdefault(target, {})[key] = n
        print(f'{key}: {n} of {len(src["pairs"])} pairs {"verified" if out is None else "-> " + target}', flush=True)
    if 'mfnet220_clean' in wanted and man.get('mfnet220_clean') and shared is not None:
        mf = man['mfnet220_clean']
        n = 0
        for pair in mf['pairs']:
            if pair['stem'] in names:
                raise PrepareError(f'mfnet220: {pair["stem"]} is an MSRS test scene: refused')
            for role in ('vi', 'ir', 'label'):
                p = shared / pair[role]['path']
                data = p.read_bytes()
                if sha256(data) != pair[role]['sha256']:
                    raise PrepareError(f'{p}: sha256 differs from the manifest: wrong or modified copy')
                if out is not None:
                    _write(out / 'mfnet220_clean' / role / p.name, data)
            n += 1
        if out is not None:
            for split, stems in mf['splits'].items():
                _write(out / 'mfnet220_clean' / 'splits' / f'{split}.txt', ''.join(s + '\n' for s in stems).encode())
        report['sets']['mfnet220_clean'] = {'mfnet220': n, **{k: len(v) for k, v in mf['splits'].items()}}
        print(f'mfnet220_clean: {n} labelled pairs {"verified" if out is None else "written"}', flush=True)
    if out is not None:
        _write(out / 'prepare_report.json', (json.dumps(report, indent=1) + '\n').encode())
        for d in report['dropped']:
            print(f'dropped {d["source"]}/{d["stem"]}: {d["reason"]}')
    return report


def cmd_build(args) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise PrepareError(f'{str(out)!r} is not empty; pass --overwrite to rebuild it')
    if args.overwrite and out.exists():
        for sub in ('msrs_test361', 'msrs_train30', 'unlabelled', 'mfnet220_clean'):
            shutil.rmtree(out / sub, ignore_errors=True)
    build(Path(args.mirror), Path(args.shared), out, args.min_side, args.sets, args.manifest)
    return 0


def cmd_verify(args) -> int:
    build(Path(args.mirror), Path(args.shared) if args.shared else None, None, sets=args.sets,
          manifest=args.manifest)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    for name, fn in (('build', cmd_build), ('verify', cmd_verify), ('manifest', cmd_manifest)):
        p = sub.add_parser(name)
        p.add_argument('--mirror', required=True, help='folder holding the repositories\' copies (see above)')
        p.add_argument('--shared', default=str(REPO.parent / 'shared' / 'data'),
                       help='the shared data folder (mfnet220, tno25, roadscene50) [../shared/data]')
        if name != 'manifest':
            p.add_argument('--manifest', help=f'manifest to read [{MANIFEST.relative_to(REPO)}]')
            p.add_argument('--sets', nargs='+', choices=['msrs_test361', 'msrs_train30', 'unlabelled',
                                                         'mfnet220_clean'], help='only these output sets')
        if name == 'build':
            p.add_argument('--out', required=True, help='output folder, outside the repository')
            p.add_argument('--min-side', type=int, default=256, help='drop unlabelled pairs smaller than this [256]')
            p.add_argument('--overwrite', action='store_true')
        p.set_defaults(func=fn)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except PrepareError as e:
        print(f'prepare_data: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
