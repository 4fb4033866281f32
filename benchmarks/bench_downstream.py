"""Downstream benchmark (issue 22): which tokenizer makes the best tokens for a world model, at equal tokenizer budget
and equal world-model budget, in one run.

Tokenizers, each trained here for --tokenizer-minutes on the same frames (the `cpu` preset's Minecraft worlds) with
the same encoder/decoder and optimiser:

  ours                      the `cpu` preset, tokens by plain nearest-code encoding
  ours + hysteresis         the same trained tokenizer (no extra training), tokens with tokenize's default hysteresis
  ours + consistency        the `cpu` preset with loss.consistency=--consistency (training-time token stability)
  vector-quantize-pytorch   the `cpu` encoder/decoder around VectorQuantize (benchmarks/vqtorch_baseline.py)
  FSQ                       the `cpu` encoder/decoder with quantizer.kind=fsq (levels 8,5,5,5: 1000 codes)

Per tokenizer: reconstruction PSNR of the held-out worlds' tokens (decoded), token change from frame to frame (all
cells, and cells whose pixels did not change: `temporal_metrics`), the codes' entropy and bits given the previous code
(counted on the held-out codes), then the reference world model (`world_model`, preset tiny) trained for
--world-model-steps on the training worlds' tokens and evaluated on the held-out worlds' tokens: next-frame bits/frame,
action gain, 8-step rollouts decoded and compared with the original frames. Writes results.md/results.json and
rollout grids under --out; the last table row says which tokenizer property follows the world model's quality best
(Pearson correlation across the rows: few rows, read it as a hint).

    PYTHONPATH=$PWD python benchmarks/bench_downstream.py --tokenizer-minutes 9 --world-model-steps 300

The real budgets (9 minutes per tokenizer on 2 CPU cores, as the main job's `cpu` preset) took 45 minutes here; timings on
a shared machine are noisy, so this reports quality only, never speed.
"""
from __future__ import annotations
import argparse, json, platform, sys, time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vqtorch_baseline import vqtorch_tokenizer  # noqa: E402
from bench_world_model import shrink_png  # noqa: E402

from vqvae_kaggle import checkpoint as ck  # noqa: E402
from vqvae_kaggle.config import apply_overrides  # noqa: E402
from vqvae_kaggle.presets import get_preset  # noqa: E402
from vqvae_kaggle.data import load_splits  # noqa: E402
from vqvae_kaggle.model import encode_frames, decode_codes  # noqa: E402
from vqvae_kaggle.shared import atomic_write  # noqa: E402
from vqvae_kaggle.temporal import temporal_metrics  # noqa: E402
from vqvae_kaggle.token_stability import stable_encode, stability_meta, HYSTERESIS_MARGIN  # noqa: E402
from vqvae_kaggle.train import Trainer  # noqa: E402
from vqvae_kaggle.world_model import world_model_config, train_world_model, evaluate_world_model, write_token_folder  # noqa: E402

RUN_SETTINGS = ['run.wandb=disabled', 'run.val_frames=64', 'run.sample_frames=4', 'run.checkpoint_every_minutes=100000',
                'run.keep_checkpoints=1', 'run.eval_every_minutes=100000']


def arms(consistency: float) -> list[tuple[str, str, list[str], float]]:
    "(name, slug of the trained tokenizer, config overrides, hysteresis margin of its tokens)."
    return [('ours', 'ours', [], 0.0),
            ('ours + hysteresis', 'ours', [], HYSTERESIS_MARGIN),
            (f'ours + consistency {consistency:g}', 'consistency', [f'loss.consistency={consistency}'], 0.0),
            ('vector-quantize-pytorch', 'vqtorch', [], 0.0),
            ('FSQ (8,5,5,5)', 'fsq', ['quantizer.kind=fsq', 'quantizer.fsq_levels=8,5,5,5'], 0.0)]


def episode_starts(episodes) -> np.ndarray:
    e = np.asarray(episodes)
    return np.flatnonzero(np.r_[True, e[1:] != e[:-1]])


def encode(model, frames, episodes, margin: float) -> np.ndarray:
    "Codes of `frames`: plain nearest codes (margin 0: any quantizer), or with hysteresis within each episode."
    if margin == 0: return encode_frames(model, frames, 64)
    first = np.zeros(len(frames), bool); first[episode_starts(episodes)] = True
    return stable_encode(model, frames, margin, first)


def recon_psnr(model, codes, frames) -> float:
    "Mean per-frame PSNR (dB) of the decoded codes against the frames (uint8)."
    dec = decode_codes(model, codes, 64).astype(np.float64)
    mse = ((dec - frames.astype(np.float64)) ** 2).reshape(len(frames), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


class InMemoryTokenizer:
    "evaluate_world_model decodes rollouts with `checkpoint.load_tokenizer(path)`: here the path of an arm's folder gives its trained model (the vqtorch one has no loadable checkpoint)."
    def __init__(self): self.models, self.real = {}, ck.load_tokenizer
    def __call__(self, path, *a, **k):
        m = self.models.get(str(path))
        return (m, None, {}) if m is not None else self.real(path, *a, **k)


def pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0: return float('nan')
    return float(np.corrcoef(a, b)[0, 1])


PROPERTIES = [('psnr', 'reconstruction PSNR'), ('token_change', 'token change'), ('token_change_static', 'token change, static'),
              ('entropy_bits_per_frame', 'code entropy bits/frame'), ('cond_bits_per_frame', 'bits/frame given previous code')]
QUALITIES = [('wm_bits', 'WM bits/frame (lower is better)'), ('rollout_psnr', 'rollout PSNR vs original, mean over 8 steps'),
             ('action_gain', 'action gain bits/frame')]


def markdown(rows: list[dict], info: dict) -> str:
    f1 = lambda x, f='{:.1f}': f.format(x) if x is not None and np.isfinite(x) else 'n/a'
    out = [f"# Downstream benchmark: tokenizers for a world model ({info['tokenizer_minutes']:g} min per tokenizer, "
           f"{info['world_model_steps']} world-model steps per tokenizer)", '',
           f"Frames: the `cpu` preset's Minecraft worlds at 128x72, {info['train_frames']} training frames ({info['train_episodes']} worlds), "
           f"{info['val_frames']} held-out frames ({info['val_episodes']} worlds). Each tokenizer trained for {info['tokenizer_minutes']:g} "
           f"minutes on {info['machine']} (steps below; the machine was shared, so steps differ with load, not only with cost). "
           f"World model: preset `tiny` {info['world_model']}, the same seed and {info['world_model_steps']} steps for every tokenizer. "
           "Token change and bits are counted on the held-out tokens (`temporal_metrics`; static: cells whose pixels did not "
           "change). Uniform bits: cells x log2(codebook size), a uniform guess. Rollouts: 16 x 8 steps from 2 real frames, decoded "
           "with the arm's tokenizer, PSNR against the original frames (t+1 / t+8; ceiling: the tokenizer's own reconstruction "
           "of those frames).", '',
           '| tokenizer | steps | recon PSNR | token change | static | code entropy bits/frame | bits given previous | uniform bits | '
           'WM bits/frame | WM acc. / copy-last | action gain | rollout PSNR t+1 / t+8 | copy-last PSNR vs decoded t+1 / t+8 | ceiling PSNR |',
           '|' + '---|' * 14]
    for r in rows:
        t, e = r['temporal'], r['eval']
        po, cp, ce = e.get('pred_vs_original', {}).get('psnr'), e.get('copy_vs_decoded', {}).get('psnr'), e.get('ceiling', {}).get('psnr')
        two = lambda xs: f'{xs[0]:.1f} / {xs[-1]:.1f}' if xs else 'n/a'
        out.append(f"| {r['name']} | {r['steps']} | {r['psnr']:.2f} | {t['token_change']:.1%} | {t['token_change_static']:.1%} | "
                   f"{t['entropy_bits_per_frame']:.0f} | {t['cond_bits_per_frame']:.0f} | {r['uniform_bits']:.0f} | {e['bits_per_frame']:.0f} | "
                   f"{e['accuracy']:.1%} / {e['copy_accuracy']:.1%} | {f1(e.get('action_gain'))} | {two(po)} | {two(cp)} | "
                   f"{f1(np.mean(ce) if ce else None, '{:.2f}')} |")
    out += ['', '## Which tokenizer property follows the world model?', '',
            f"Pearson correlation across the {len(rows)} rows (few rows, and two of them share a tokenizer: a hint, not a law):", '',
            '| property | ' + ' | '.join(q for _, q in QUALITIES) + ' |', '|' + '---|' * (len(QUALITIES) + 1)]
    for k, name in PROPERTIES:
        out.append(f'| {name} | ' + ' | '.join(f"{info['correlations'][k][q]:+.2f}" for q, _ in QUALITIES) + ' |')
    out += ['', f"Command: `{info['command']}` ({info['seconds'] / 60:.0f} min, {info['machine']})", '']
    return '\n'.join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--tokenizer-minutes', type=float, default=9.0, help='training budget per tokenizer (default 9, the cpu preset)')
    p.add_argument('--world-model-steps', type=int, default=300, help='world-model training per tokenizer, in optimiser steps')
    p.add_argument('--consistency', type=float, default=1.0, help='loss.consistency of the consistency arm (default 1: the weight that cut flicker on constructed sequences)')
    p.add_argument('--only', default=None, help='comma-separated arm slugs to run (ours,consistency,vqtorch,fsq)')
    p.add_argument('--set', action='append', default=[], help='override the cpu preset for every tokenizer (e.g. data.cache_dir=...)')
    p.add_argument('--work', default='runs/bench-downstream'); p.add_argument('--out', default='benchmarks/results/downstream')
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    t0, work, out = time.time(), Path(args.work), Path(args.out)
    base = apply_overrides(get_preset('cpu'), [*RUN_SETTINGS, f'run.budget_minutes={args.tokenizer_minutes}', f'run.device={args.device}', *args.set])
    train, val = load_splits(base, progress=False)
    wcfg = world_model_config('tiny', steps=args.world_model_steps)
    loader = InMemoryTokenizer(); ck.load_tokenizer = loader   # see InMemoryTokenizer
    only = set(args.only.split(',')) if args.only else None
    trained, rows = {}, []
    for name, slug, overrides, margin in arms(args.consistency):
        if only and slug not in only: continue
        if slug not in trained:
            cfg = replace(apply_overrides(base, overrides), name=slug)
            model = vqtorch_tokenizer(cfg) if slug == 'vqtorch' else None
            trainer = Trainer(cfg, work / slug / 'train', resume=False, progress=False, splits=(train, val), model=model)
            s = trainer.fit()
            trained[slug] = (trainer.model.eval(), s['step'])
            print(f'{slug}: {s["step"]} steps in {s["session_seconds"]:.0f} s', flush=True)
        model, steps = trained[slug]
        arm = work / f'{slug}-m{margin:g}'
        loader.models[str(arm)] = model
        folders = {}
        with torch.no_grad():
            for split, fs in (('train', train), ('val', val)):
                codes = encode(model, fs.frames, fs.episodes, margin).astype(np.uint16)
                write_token_folder(arm / split, codes, episode_starts(fs.episodes), np.asarray(fs.actions, np.float32), model.codebook_size,
                                   fs.action_names, note=f'bench_downstream: {name}', stability=stability_meta(margin))
                folders[split] = codes
            psnr = recon_psnr(model, folders['val'], val.frames)
        temporal = temporal_metrics(folders['val'], val.frames, np.asarray(val.episodes), model.codebook_size)
        r = train_world_model(arm / 'train', wcfg, arm / 'wm', device=args.device)
        e = evaluate_world_model(r['model'], arm / 'val', str(arm), 8, rollouts=16, frames=val.frames, device=args.device,
                                 grid_path=out / f'rollouts-{slug}-m{margin:g}.png')
        shrink_png(out / f'rollouts-{slug}-m{margin:g}.png')
        e.pop('rollout_rows', None)
        h, w = folders['val'].shape[1:]
        rows.append(dict(name=name, slug=slug, margin=margin, steps=steps, psnr=psnr, temporal=temporal, eval=e,
                         uniform_bits=h * w * float(np.log2(model.codebook_size)), world_model_steps=r['steps']))
        print(f"{name}: PSNR {psnr:.2f}, token change {temporal['token_change']:.1%} (static {temporal['token_change_static']:.1%}), "
              f"WM {e['bits_per_frame']:.0f} bits/frame, action gain {e.get('action_gain', float('nan')):.1f}", flush=True)
    quality = dict(wm_bits=[r['eval']['bits_per_frame'] for r in rows],
                   rollout_psnr=[float(np.mean(r['eval'].get('pred_vs_original', {}).get('psnr', [np.nan]))) for r in rows],
                   action_gain=[r['eval'].get('action_gain', np.nan) for r in rows])
    props = {k: [r['psnr'] if k == 'psnr' else r['temporal'][k] for r in rows] for k, _ in PROPERTIES}
    info = dict(tokenizer_minutes=args.tokenizer_minutes, world_model_steps=args.world_model_steps, world_model=asdict(wcfg),
                train_frames=len(train.frames), train_episodes=len(np.unique(train.episodes)), val_frames=len(val.frames),
                val_episodes=len(np.unique(val.episodes)), consistency=args.consistency,
                correlations={k: {q: pearson(v, quality[q]) for q in quality} for k, v in props.items()},
                seconds=time.time() - t0, machine=f'{platform.machine()}, {args.device}, {torch.get_num_threads()} threads',
                command='PYTHONPATH=$PWD python benchmarks/bench_downstream.py ' + ' '.join(sys.argv[1:] if argv is None else argv))
    atomic_write(out / 'results.json', json.dumps(dict(info=info, rows=rows), indent=1, default=float) + '\n')
    atomic_write(out / 'results.md', markdown(rows, info))
    print(markdown(rows, info))
    return dict(info=info, rows=rows)


if __name__ == '__main__':
    main()
