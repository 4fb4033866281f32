"""Preset exploration: short trainings of the `cpu` preset with one change each, on the same data, one after another.

Each variant trains for the same wall-clock budget (so a slower network pays for its width with fewer steps, as it
would in the main job) and is evaluated on held-out worlds as rendered for training (`val`), on the same worlds
rendered at 3x with a Lanczos filter (`val-alt`) and on as many training frames (`train`: the gap says how much is
memorised). Writes a markdown table (and JSON) to --out.

    .venv/bin/python benchmarks/explore.py --budget-minutes 3 --out runs/explore \\
        --variant base: --variant aug:data.aug_scale=0.25,data.aug_blur=0.5,data.aug_color=0.1

A variant is `name:section.field=value,...` (values with commas, like channels, use `;` instead: model.channels=32;64;128).
Not a test: budget x variants plus evaluation. Run it alone on the machine: the variants are compared by what they
reach in the same time.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import RUN_SETTINGS, train_one  # noqa: E402

from vqvae_kaggle.config import apply_overrides  # noqa: E402
from vqvae_kaggle.presets import get_preset  # noqa: E402
from vqvae_kaggle.data import alt_val_frames, load_splits  # noqa: E402
from vqvae_kaggle.evaluate import evaluate, sample_indices  # noqa: E402


def parse_variant(spec: str) -> tuple[str, list[str]]:
    "'name:a.b=1,c.d=x;y' -> ('name', ['a.b=1', 'c.d=x,y'])."
    name, _, sets = spec.partition(':')
    return name, [s.replace(';', ',') for s in sets.split(',') if s]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--budget-minutes', type=float, default=3.0)
    p.add_argument('--out', default='runs/explore')
    p.add_argument('--variant', action='append', required=True, help="name:section.field=value,... (repeatable)")
    p.add_argument('--eval-frames', type=int, default=320, help='frames per evaluated set')
    p.add_argument('--preset', default='cpu')
    args = p.parse_args(argv)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.variant:
        name, sets = parse_variant(spec)
        cfg = apply_overrides(get_preset(args.preset), [*sets, *RUN_SETTINGS, f'run.budget_minutes={args.budget_minutes}'])
        train, val = load_splits(cfg, progress=False)
        alt = alt_val_frames(cfg, progress=False)
        n = args.eval_frames
        sets_eval = {'val': val.frames[sample_indices(len(val), n)], 'val-alt': alt.frames[sample_indices(len(alt), n)],
                     'train': train.frames[sample_indices(len(train), n)]}
        print(f'== {name}: {" ".join(sets) or "(preset as is)"}; {len(train)} train frames / {len(train.names)} worlds', flush=True)
        model, info = train_one(name, cfg, (train, val), out / name)
        row = dict(name=name, sets=sets, steps=info['steps'], steps_per_s=round(info['steps_per_s'], 2),
                   params=info['params'], train_frames=len(train), worlds=len(train.names))
        for s, frames in sets_eval.items():
            m = evaluate(model, frames, 'cpu', batch_size=32)
            row[s] = {k: m[k] for k in ('psnr', 'ssim', 'usage', 'artifact')}
        row['gap_db'] = round(row['train']['psnr'] - row['val']['psnr'], 2)
        print(f"   val {row['val']['psnr']:.2f} dB, val-alt {row['val-alt']['psnr']:.2f} dB, train {row['train']['psnr']:.2f} dB "
              f"(gap {row['gap_db']:+.2f}), usage {row['val']['usage']:.1%}, {row['steps']} steps", flush=True)
        rows.append(row)
        (out / 'explore.json').write_text(json.dumps(rows, indent=1))
    head = '| variant | changes | worlds / frames | steps | val PSNR | val-alt PSNR | train PSNR | train - val | val SSIM | usage | artifact |'
    lines = [head, '|' + '---|' * 11]
    for r in rows:
        lines.append(f"| {r['name']} | {' '.join(r['sets']) or '-'} | {r['worlds']} / {r['train_frames']} | {r['steps']} | "
                     f"{r['val']['psnr']:.2f} | {r['val-alt']['psnr']:.2f} | {r['train']['psnr']:.2f} | {r['gap_db']:+.2f} | "
                     f"{r['val']['ssim']:.3f} | {r['val']['usage']:.1%} | {r['val']['artifact']:.2f} |")
    md = (f'# Exploration: preset `{args.preset}`, {args.budget_minutes:g} min per variant\n\n{os.cpu_count()} CPU cores, torch '
          f'{torch.__version__}, {torch.get_num_threads()} threads; {args.eval_frames} frames per evaluated set.\n\n' + '\n'.join(lines) + '\n')
    (out / 'explore.md').write_text(md)
    print('\n' + md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
