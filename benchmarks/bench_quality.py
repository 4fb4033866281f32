"""Quality benchmark: three tokenizers, the same wall-clock training budget each, on the same machine in one run.

  (a) ours     the `cpu` preset (the `default` family at CPU scale)
  (b) seed     the experiment log's v2.1.0 preset at 128x72 -> 32x18 (EMA 1024 x 384, no k-means/restarts,
               transposed-conv decoder); batch reduced for the CPU (see --seed-batch), LPIPS 0.3 only if its
               weights are available (otherwise trained without it, and the table says so)
  (c) vqtorch  (a)'s encoder/decoder around vector-quantize-pytorch's VectorQuantize
               (k-means init, threshold_ema_dead_code=2, 32-dim lookup, same codebook size)

All train on (a)'s data (the embedded Minecraft frames by default; `--set data.source=crafter` for Crafter), cached
under data-cache/, and are evaluated on the held-out worlds as rendered for training (`val`), on the same worlds
rendered at 3x and Lanczos-filtered (`val-alt`: what was learnt beyond one renderer) and on as many training frames
(`train`: the gap to held-out says how much is memorised): PSNR, SSIM, LPIPS (or why not), codebook usage/perplexity/dead codes, flat-region artifact score, the
uniform/gradient probe, steps done and steps/s. Writes results.md, results.json, a compare grid of the three
reconstructions of the same held-out frames, a compare grid of their probe reconstructions, and per-model
reconstruction/difference and probe grids under --out.

    PYTHONPATH=$PWD python benchmarks/bench_quality.py --budget-minutes 10 --out runs/bench-quality

Not a test: it takes budget x 3 plus evaluation (about 35-45 minutes on 2 CPU cores at the default budget).
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vqtorch_baseline import vqtorch_tokenizer  # noqa: E402

from vqvae_kaggle.augment import augmenting  # noqa: E402
from vqvae_kaggle.config import Config, apply_overrides, config_to_dict  # noqa: E402
from vqvae_kaggle.presets import get_preset  # noqa: E402
from vqvae_kaggle.data import load_splits, alt_val_frames  # noqa: E402
from vqvae_kaggle.evaluate import (evaluate_model, lpips_metric, reconstruct, reconstruct_unit,  # noqa: E402
                                   frames_to_tensor, sample_indices)
from vqvae_kaggle.report import eval_markdown, write_json  # noqa: E402
from vqvae_kaggle.checkpoint import resolve_device  # noqa: E402
from vqvae_kaggle.metrics import probe_frames  # noqa: E402
from vqvae_kaggle.model import count_parameters  # noqa: E402
from vqvae_kaggle.train import Trainer  # noqa: E402
from vqvae_kaggle.viz import compare_grid, save_grid  # noqa: E402

# The same training-side settings for every model: no wandb, a cheap per-epoch check (the full held-out evaluation
# happens after training, outside the budget), no periodic checkpoints eating into the budget.
RUN_SETTINGS = ['run.wandb=disabled', 'run.val_frames=64', 'run.sample_frames=4', 'run.checkpoint_every_minutes=100000',
                'run.keep_checkpoints=1']


def bench_configs(budget_minutes: float, device: str, seed_batch: int, lpips_ok: bool,
                  overrides: list[str] = ()) -> dict[str, tuple[Config, str]]:
    "{name: (config, note)} for (a) (the cpu preset + `overrides`), (b), (c), all on (a)'s data and run settings."
    ours = apply_overrides(get_preset('cpu'), [*overrides, *RUN_SETTINGS, f'run.budget_minutes={budget_minutes}', f'run.device={device}'])
    seed = get_preset('v2.1.0')
    seed_batch = seed_batch or ours.optim.batch_size
    notes = [f'batch {seed.optim.batch_size} -> {seed_batch} for the CPU']
    loss = seed.loss
    if not lpips_ok:
        loss = replace(loss, lpips=0.0, lpips_step=0.0)
        notes.append('LPIPS 0.3 (+0.05/5 epochs) dropped: its weights are unavailable here')
    # the seed had no collapse remedy: the trainer's (a dead-code restart when usage falls under 5%) is switched off
    notes.append("the trainer's collapse remedy switched off (run.collapse_min_usage=0), as in the seed")
    if augmenting(ours.data): notes.append('no augmentations, as in the seed')
    # the same frames, but not our augmentations (the seed had none)
    seed = replace(seed, name='seed-v2.1.0', data=replace(ours.data, aug_scale=0.0, aug_blur=0.0, aug_color=0.0),
                   run=replace(ours.run, collapse_min_usage=0.0), loss=loss,
                   optim=replace(seed.optim, batch_size=seed_batch))
    return {'ours (cpu preset)': (ours, 'cpu preset with ' + ', '.join(overrides) if overrides else ''),
            'seed v2.1.0': (seed, '; '.join(notes)),
            'vector-quantize-pytorch': (replace(ours, name='vqtorch'), 'VectorQuantize(kmeans_init=True, '
                                        'threshold_ema_dead_code=2, codebook_dim=32) in (a)\'s encoder/decoder')}


def train_one(name: str, cfg: Config, splits, out: Path, model=None) -> tuple[torch.nn.Module, dict]:
    "Train `cfg` (or the injected `model`) for its budget; (trained model, training summary with steps/s)."
    t = time.monotonic()
    trainer = Trainer(cfg, out / 'train', resume=False, progress=False, splits=splits, model=model)
    summary = trainer.fit()
    wall = time.monotonic() - t
    info = dict(steps=summary['step'], epochs=summary['epochs_done'], session_seconds=summary['session_seconds'],
                steps_per_s=summary['step'] / max(summary['session_seconds'], 1e-9),
                images_per_s=summary['step'] * cfg.optim.batch_size / max(summary['session_seconds'], 1e-9),
                skipped_steps=summary['skipped_steps'], alerts=summary['alerts'], batch_size=cfg.optim.batch_size,
                params=count_parameters(trainer.model), wall_seconds=round(wall, 1))
    print(f"  {name}: {info['steps']} steps in {info['session_seconds']:.0f}s ({info['steps_per_s']:.2f} steps/s, "
          f"batch {cfg.optim.batch_size}, {info['params'] / 1e6:.2f}M parameters)", flush=True)
    return trainer.model.eval(), info


EXTRA_COLUMNS = [('steps', 'steps', '{:d}'), ('steps_per_s', 'steps/s', '{:.2f}'), ('batch_size', 'batch', '{:d}')]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--budget-minutes', type=float, default=10.0, help='training budget per model (default 10)')
    p.add_argument('--out', default='runs/bench-quality', help='output folder')
    p.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', ...")
    p.add_argument('--seed-batch', type=int, default=None, help="batch size of the seed v2.1.0 model (default: (a)'s; its log used 256)")
    p.add_argument('--eval-frames', type=int, default=None, help='held-out frames evaluated (default: all)')
    p.add_argument('--sample-frames', type=int, default=8, help='frames in the grids')
    p.add_argument('--only', default='a,b,c', help='which models to run, e.g. a,c')
    p.add_argument('--set', action='append', default=[], metavar='SECTION.FIELD=VALUE',
                   help="override the cpu preset for (a); (c) shares (a)'s encoder/decoder and optimiser settings")
    args = p.parse_args(argv)

    out = Path(args.out)
    device = resolve_device(args.device)
    lp = lpips_metric(True, device)
    print(f'LPIPS: {lp[1]}', flush=True)
    configs = bench_configs(args.budget_minutes, str(device), args.seed_batch, lp[0] is not None, args.set)
    keys = dict(zip('abc', configs))
    chosen = [keys[k.strip()] for k in args.only.split(',') if k.strip()]
    ref_cfg = configs[chosen[0]][0]
    splits = load_splits(ref_cfg, progress=True)
    val = splits[1].frames[:args.eval_frames] if args.eval_frames else splits[1].frames
    alt = alt_val_frames(ref_cfg, progress=True).frames[:len(val)]
    seen = splits[0].frames[sample_indices(len(splits[0]), len(val))]
    sources = [('val', val), ('val-alt', alt), ('train', seen)]
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, device {device}; {len(splits[0])} train / {len(val)} held-out frames; '
          f'budget {args.budget_minutes:g} min per model', flush=True)

    results, infos, models = {}, {}, {}
    for name in chosen:
        cfg, note = configs[name]
        slug = cfg.name
        print(f'training {name} ({slug}){": " + note if note else ""}', flush=True)
        model = vqtorch_tokenizer(cfg) if slug == 'vqtorch' else None
        model, info = train_one(name, cfg, splits, out / slug, model)
        info['note'] = note
        r = evaluate_model(model, cfg, sources, out / slug, name, batch_size=32,
                           sample_frames=args.sample_frames, lpips=lp)
        for src in r['sources'].values(): src.update(steps=info['steps'], steps_per_s=info['steps_per_s'], batch_size=info['batch_size'])
        r.update(training=info, config=config_to_dict(cfg))
        write_json(out / slug / 'eval.json', r)
        results[name], infos[name], models[name] = r, info, model
        for s, m in r['sources'].items():
            print(f"  {s}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, usage {m['usage']:.1%}, artifact {m['artifact']:.2f}", flush=True)
        print(f"  probe PSNR {r['probe']['probe_psnr']:.2f} dB, probe grid energy {r['probe']['probe_grid_energy']:.3f}", flush=True)

    pick = val[sample_indices(len(val), args.sample_frames)]
    recon = {n: reconstruct(mdl, frames_to_tensor(pick, device))[0].float().cpu() for n, mdl in models.items()}
    grid = save_grid(compare_grid(recon, pick, scale=2), out / 'compare_heldout.png')
    w, h = ref_cfg.data.width, ref_cfg.data.height
    probes = probe_frames(w, h)
    probe_recon = {n: reconstruct_unit(mdl, probes.to(device)).cpu() for n, mdl in models.items()}
    probe_cmp = save_grid(compare_grid(probe_recon, probes, scale=2), out / 'compare_probe.png')

    table = eval_markdown(results, EXTRA_COLUMNS)
    notes = [f'- {n}: {configs[n][1]}' for n in chosen if configs[n][1]]
    md = (f'# Quality benchmark: {args.budget_minutes:g} min training per model\n\n'
          f'Machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, device {device}. Training on {len(splits[0])} '
          f'frames of {len(splits[0].names)} {ref_cfg.data.source} worlds; evaluation on {len(val)} frames of '
          f'{len(splits[1].names)} held-out worlds as rendered for training (val) and rendered at 3x with a Lanczos filter '
          f'(val-alt), and on {len(seen)} training frames (train); {w}x{h} -> {ref_cfg.latent_grid[0]}x{ref_cfg.latent_grid[1]} latents.\n\n'
          f'{table}\n\n' + ('Notes:\n' + '\n'.join(notes) + '\n\n' if notes else '') +
          f'Grids: {grid.name} (held-out frames), {probe_cmp.name} (uniform/gradient probe); per model: '
          '<model>/val_reconstructions.png, <model>/probe.png.\n')
    (out / 'results.md').write_text(md)
    write_json(out / 'results.json', {'budget_minutes': args.budget_minutes, 'device': str(device), 'lpips': lp[1],
                                       'models': results, 'compare_grid': str(grid), 'compare_probe': str(probe_cmp)})
    print('\n' + md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
