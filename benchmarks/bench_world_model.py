"""World-model benchmark: what the reference world model (`vqvae_kaggle.world_model`) makes of a tokenizer's tokens,
plain and with tokenize-time hysteresis, at equal world-model budget.

The run's training worlds and held-out worlds (the frames `eval` uses: consecutive frames of each world as rendered for
training, with their actions, read from the frame cache under data-cache/) are encoded with the tokenizer, once per
hysteresis margin (0 = plain `encode`), into token folders under --work. For each margin, a world model of the given
preset trains on the training worlds' tokens for --seconds (same seed, same budget) and is evaluated on the held-out
worlds' tokens: next-frame bits per frame, top-1 accuracy (and the accuracy of copying the last frame), action gain
(bits with the held-out actions shuffled minus bits with the true ones), and 8-step teacher-free rollouts decoded and
compared with the decoded real codes and with the original frames (with the tokenizer's own ceiling beside them).
Writes results.md, results.json and one rollout grid per margin under --out.

    PYTHONPATH=$PWD python benchmarks/bench_world_model.py --checkpoint runs/cpu --margins 0,0.02 --steps 300

About 5 + 2 x (2..5 + 1) minutes on 2 shared CPU cores at the defaults (tokenizing, then training and evaluating each
arm); a GPU takes --preset small or gpu and --device cuda. The tiny preset at 300 steps learns the codes' statistics and
how much the actions move them, not yet to beat copying the last frame: it is a yardstick for comparing tokens at equal
budget, not a good world model.
"""
from __future__ import annotations
import argparse, json, platform, sys, time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from vqvae_kaggle.checkpoint import load_tokenizer
from vqvae_kaggle.data import load_splits
from vqvae_kaggle.shared import atomic_write, file_sha256
from vqvae_kaggle.temporal import temporal_metrics
from vqvae_kaggle.token_stability import stable_encode, stability_meta, HYSTERESIS_MARGIN
from vqvae_kaggle.world_model import world_model_config, train_world_model, evaluate_world_model, write_token_folder, WORLD_MODEL_PRESETS


def episode_starts(episodes: np.ndarray) -> np.ndarray:
    "Rows where each episode starts; each episode's rows must be one consecutive run (as the renderer writes them)."
    e = np.asarray(episodes)
    starts = np.flatnonzero(np.r_[True, e[1:] != e[:-1]])
    if len(np.unique(e)) != len(starts): raise ValueError('an episode is split over several runs of rows')
    return starts


def shrink_png(path: Path) -> Path:
    "Halve a rollout grid's resolution in place (full size is 2-3 MB a grid: too heavy for the repository)."
    import io
    from PIL import Image
    with Image.open(path) as im: small = im.convert('RGB').reduce(2)
    buf = io.BytesIO(); small.save(buf, format='PNG', optimize=True)
    atomic_write(path, buf.getvalue())
    return path


def token_folder(model, tokenizer: dict, fs, margin: float, out: Path, batch_size: int = 64) -> tuple[Path, dict]:
    "Encode a FrameSet into a token folder (reused when it exists); also the temporal measures of its codes."
    starts = episode_starts(fs.episodes)
    first = np.zeros(len(fs.frames), bool); first[starts] = True
    if not (out / 'meta.json').exists():
        codes = stable_encode(model, fs.frames, margin, first, batch_size=batch_size).astype(np.uint16)
        write_token_folder(out, codes, starts, None if fs.actions is None else np.asarray(fs.actions, np.float32), model.codebook_size,
                           fs.action_names, note='frames of the run\'s split, encoded by bench_world_model', tokenizer=tokenizer,
                           stability=stability_meta(margin))
    codes = np.load(out / 'codes.npy')
    return out, temporal_metrics(codes, fs.frames, np.asarray(fs.episodes), model.codebook_size)


def markdown(rows: list[dict], info: dict) -> str:
    head = ['| hysteresis margin | token change | token change, static | code entropy bits/frame | bits/frame given previous code (counted) | WM bits/frame | WM accuracy | copy-last accuracy | '
            'action gain bits/frame | rollout token acc. t+1 / t+8 | rollout PSNR vs decoded t+1 / t+8 | copy-last PSNR t+1 / t+8 | '
            'rollout PSNR vs original t+1 / t+8 | tokenizer ceiling PSNR |', '|' + '---|' * 14]
    for r in rows:
        e, t = r['eval'], r['temporal']
        two = lambda xs, f='{:.1f}': f'{f.format(xs[0])} / {f.format(xs[-1])}' if xs else 'n/a'
        pd = e.get('pred_vs_decoded', {}).get('psnr'); cp = e.get('copy_vs_decoded', {}).get('psnr')
        po = e.get('pred_vs_original', {}).get('psnr'); ce = e.get('ceiling', {}).get('psnr')
        head.append(f"| {r['margin']:g} | {t['token_change']:.1%} | {t['token_change_static']:.1%} | {t['entropy_bits_per_frame']:.0f} | "
                    f"{t['cond_bits_per_frame']:.0f} | {e['bits_per_frame']:.0f} | "
                    f"{e['accuracy']:.1%} | {e['copy_accuracy']:.1%} | {e.get('action_gain', float('nan')):.1f} | "
                    f"{two(e.get('rollout_accuracy'), '{:.1%}')} | {two(pd)} | {two(cp)} | {two(po)} | {np.mean(ce) if ce else float('nan'):.2f} |")
    return '\n'.join([f"# Reference world model on `{info['checkpoint']}` tokens", '',
                      f"World model: preset `{info['preset']}` {info['config']}, {info['steps_per_arm']} steps of training per arm on "
                      f"{info['train_frames']} frames ({info['train_episodes']} training worlds), evaluated on {info['val_frames']} frames "
                      f"({info['val_episodes']} held-out worlds); rollouts: {info['rollouts']} x {info['k']} steps from {info['context']} real frames. "
                      f"Bits/frame of a uniform guess: {info['uniform_bits']:.0f}. Code entropy and bits given the previous code are "
                      "counted on the held-out codes themselves (`temporal_metrics`: a model that knew their statistics in advance), "
                      "for reference. Copy-last: predicting that nothing changes. Action gain: WM bits/frame with the held-out actions "
                      "shuffled minus with the true ones.",
                      '', *head, '', f"Command: `{info['command']}` ({info['seconds']:.0f} s, {info['machine']})", ''])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--checkpoint', default='runs/cpu')
    p.add_argument('--margins', default='0,0.02', help='hysteresis margins, comma-separated (0 = plain encode)')
    p.add_argument('--preset', default='tiny', choices=sorted(WORLD_MODEL_PRESETS))
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
    p.add_argument('--steps', type=int, default=300, help='training budget per arm, in optimiser steps (equal work whatever else runs on the machine)')
    p.add_argument('--seconds', type=float, default=None, help='also stop an arm after this long (then arms may differ in steps)')
    p.add_argument('-k', type=int, default=8); p.add_argument('--rollouts', type=int, default=16)
    p.add_argument('--work', default='runs/bench-world-model', help='token folders and world models')
    p.add_argument('--out', default='benchmarks/results/world_model')
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    t0 = time.time()
    model, cfg, state = load_tokenizer(args.checkpoint, 'cpu')
    train, val = load_splits(cfg, progress=False)
    wcfg = world_model_config(args.preset, **{'steps': args.steps, 'seconds': args.seconds, **dict(kv.split('=', 1) for kv in args.set)})
    work, out = Path(args.work), Path(args.out)
    tokenizer = dict(checkpoint=str(args.checkpoint), sha256=file_sha256(state['path']), step=state.get('step'))
    rows = []
    for m in [float(x) for x in args.margins.split(',')]:
        tr, _ = token_folder(model, tokenizer, train, m, work / f'tokens-m{m:g}' / 'train')
        va, temporal = token_folder(model, tokenizer, val, m, work / f'tokens-m{m:g}' / 'val')
        r = train_world_model(tr, wcfg, work / f'wm-m{m:g}', device=args.device)
        e = evaluate_world_model(r['model'], va, args.checkpoint, args.k, rollouts=args.rollouts, frames=val.frames, device=args.device,
                                 grid_path=out / f'rollouts-m{m:g}.png')
        shrink_png(out / f'rollouts-m{m:g}.png')
        e.pop('rollout_rows', None)
        rows.append(dict(margin=m, temporal=temporal, eval=e, train=dict(steps=r['steps'], seconds=r['seconds'],
                                                                          bits_per_frame_first=r['bits_per_frame'][0], bits_per_frame_last=r['bits_per_frame'][-1])))
        print(f"margin {m:g}: {e['bits_per_frame']:.0f} bits/frame, accuracy {e['accuracy']:.1%}, action gain {e.get('action_gain', 0):.1f}", flush=True)
    h, w = np.load(work / f'tokens-m{rows[0]["margin"]:g}' / 'val' / 'codes.npy', mmap_mode='r').shape[1:]
    info = dict(checkpoint=args.checkpoint, step=state.get('step'), preset=args.preset, config=asdict(wcfg),
                steps_per_arm=[r['train']['steps'] for r in rows], train_frames=len(train.frames), train_episodes=len(np.unique(train.episodes)),
                val_frames=len(val.frames), val_episodes=len(np.unique(val.episodes)), rollouts=rows[0]['eval']['rollouts'], k=args.k,
                context=wcfg.context, uniform_bits=h * w * np.log2(model.codebook_size), seconds=time.time() - t0,
                machine=f'{platform.machine()}, {args.device}, {torch.get_num_threads()} threads',
                command='PYTHONPATH=$PWD python benchmarks/bench_world_model.py ' + ' '.join(sys.argv[1:] if argv is None else argv))
    atomic_write(out / 'results.json', json.dumps(dict(info=info, rows=rows), indent=1, default=float) + '\n')
    atomic_write(out / 'results.md', markdown(rows, info))
    # the notebook and the README show, under this name, the grid of the tokens `tokenize` writes by default
    shown = HYSTERESIS_MARGIN if any(r['margin'] == HYSTERESIS_MARGIN for r in rows) else rows[0]['margin']
    atomic_write(out / 'rollouts.png', (out / f'rollouts-m{shown:g}.png').read_bytes())
    print(markdown(rows, info))
    return dict(info=info, rows=rows)


if __name__ == '__main__':
    main()
