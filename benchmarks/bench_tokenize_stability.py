"""Token stability as `vqvae-kaggle tokenize` delivers it (issue 22): the main job's checkpoint tokenized with no flags
(hysteresis at the tokenizer's default margin, every frame of every episode), measured on the held-out worlds'
consecutive frames against plain nearest-code encoding of the same frames: token change (all, static, moving cells),
bits given the previous frame, and the PSNR of the decoded codes.

    PYTHONPATH=$PWD python benchmarks/bench_tokenize_stability.py --checkpoint runs/cpu

The token folder goes to --work (reused when it holds this tokenizer's tokens: `tokenize` resumes), the results to
--out (tokenize_default.md / .json).
"""
from __future__ import annotations
import argparse, json, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch

from vqvae_kaggle.checkpoint import load_tokenizer
from vqvae_kaggle.model import encode_frames
from vqvae_kaggle.shared import atomic_write
from vqvae_kaggle.temporal import temporal_metrics
from vqvae_kaggle.tokens import load_tokens, open_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_downstream import recon_psnr  # noqa: E402


def measure(model, codes: np.ndarray, frames: np.ndarray, episodes: np.ndarray) -> dict:
    m = temporal_metrics(codes, frames, episodes, model.codebook_size)
    return dict(psnr=recon_psnr(model, codes, frames),
                **{k: m[k] for k in ('token_change', 'token_change_static', 'token_change_moving', 'static_cells', 'cond_bits_per_frame')})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', default='runs/cpu')
    p.add_argument('--work', default='runs/bench-tokenize-stability'); p.add_argument('--out', default='benchmarks/results/stability')
    args = p.parse_args(argv)
    t0, tokens = time.time(), Path(args.work) / 'tokens'
    # the command a user runs, exactly: no flags but where to write
    subprocess.run([sys.executable, '-m', 'vqvae_kaggle.cli', 'tokenize', '--checkpoint', args.checkpoint, '--out', str(tokens), '--no-progress'], check=True)
    t = load_tokens(tokens)
    model, cfg, _ = load_tokenizer(args.checkpoint)
    src = open_source(cfg, t['meta']['source']['spec'], progress=False)    # the frames tokenize read, row for row
    if len(src) != len(t['codes']): raise SystemExit(f"{tokens}: {len(t['codes'])} rows of codes, the source has {len(src)} frames")
    held_out = np.flatnonzero(src.part == 1)                                # training worlds first, then the held-out ones
    frames, episodes = src.read(int(held_out[0]), int(held_out[-1]) + 1), src.episode[held_out]
    with torch.no_grad():
        rows = {'tokenize, default': measure(model, np.asarray(t['codes'][held_out]).astype(np.int64), frames, episodes),
                'plain encode': measure(model, encode_frames(model, frames).astype(np.int64), frames, episodes)}
    info = dict(checkpoint=args.checkpoint, stability=t['meta'].get('stability'), frames=len(frames),
                episodes=[src.names[e] for e in np.unique(episodes)], seconds=time.time() - t0,
                command='PYTHONPATH=$PWD python benchmarks/bench_tokenize_stability.py ' + ' '.join(sys.argv[1:] if argv is None else argv))
    out = Path(args.out)
    atomic_write(out / 'tokenize_default.json', json.dumps(dict(info=info, rows=rows), indent=1) + '\n')
    lines = [f"# `tokenize` with no flags, on {info['frames']} consecutive held-out frames ({', '.join(info['episodes'])})", '',
             f"Tokenizer `{args.checkpoint}`; the folder's `meta.json` says: {info['stability']}.", '',
             '| codes | PSNR dB | token change | static cells | change, static | change, moving | bits/frame given previous |', '|---|---|---|---|---|---|---|']
    lines += [f"| {k} | {r['psnr']:.2f} | {r['token_change']:.1%} | {r['static_cells']:.1%} | {r['token_change_static']:.1%} | "
              f"{r['token_change_moving']:.1%} | {r['cond_bits_per_frame']:.0f} |" for k, r in rows.items()]
    lines += ['', f"Command: `{info['command']}` ({info['seconds']:.0f} s)"]
    atomic_write(out / 'tokenize_default.md', '\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return dict(info=info, rows=rows)


if __name__ == '__main__':
    main()
