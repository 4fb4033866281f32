"""Sharpness benchmark: what the adversarial term, the perceptual term and the rotation trick cost and buy, each arm
trained for the same wall-clock budget on the same machine in one run.

  mse            the `cpu` preset as it is (MSE + commitment, straight-through estimator)
  adv            + a PatchGAN discriminator (hinge, adaptive weight), from --adv-start steps on
  adv+lpips      + LPIPS as well; run only where its backbone weights are present (otherwise listed as not run)
  rotation       the `cpu` preset with the rotation trick instead of the straight-through estimator
  adv+rotation   both

Every arm is evaluated on the held-out worlds as rendered for training (`val`), rendered at 3x with a Lanczos
filter (`val-alt`), and on the held-out worlds of a game none of them trained on (`--other-game`, default crafter):
PSNR, SSIM, the weight-free sharpness measures (high-frequency energy ratio, GMSD, Laplacian variance ratio), LPIPS with a network none of them trained on (or why not), codebook usage, the flat-region artifact
score and the uniform/gradient probe. Writes results.md, results.json, a grid of every arm's reconstructions of the
same held-out frames with zoomed textured crops, and the probe grid, under --out.

    PYTHONPATH=$PWD python benchmarks/bench_sharpness.py --budget-minutes 8 --out runs/bench-sharpness

Not a test: budget x arms plus evaluation (about 40 minutes on 2 CPU cores at 8 minutes per arm). One run per arm:
on this machine two runs of one configuration differed by up to 2 dB at 3 minutes of training
(benchmarks/results/minecraft-cpu/exploration.md), less at longer budgets, so differences of a few tenths of a dB
are noise; the sharpness measures are what this benchmark is for.
"""
from __future__ import annotations
import argparse, os, platform, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import RUN_SETTINGS, train_one  # noqa: E402

from vqvae_kaggle.config import apply_overrides, config_to_dict  # noqa: E402
from vqvae_kaggle.presets import get_preset  # noqa: E402
from vqvae_kaggle.data import load_splits, alt_val_frames  # noqa: E402
from vqvae_kaggle.evaluate import (evaluate_model, lpips_metric, reconstruct, reconstruct_unit, frames_to_tensor,  # noqa: E402
                                   sample_indices, eval_sources)
from vqvae_kaggle.report import fmt_metric, markdown_table, write_json  # noqa: E402
from vqvae_kaggle.checkpoint import resolve_device  # noqa: E402
from vqvae_kaggle.losses import build_lpips, LPIPSUnavailable  # noqa: E402
from vqvae_kaggle.metrics import probe_frames  # noqa: E402
from vqvae_kaggle.viz import compare_grid, save_grid  # noqa: E402


def arms(adv: list[str], lpips_ok: bool) -> dict[str, list[str] | None]:
    "{arm: overrides of the cpu preset, or None where it cannot run here}."
    rotation = ['quantizer.gradient=rotation']
    return {'mse': [], 'adv': adv, 'adv+lpips': [*adv, 'loss.lpips=0.1', 'loss.lpips_net=vgg'] if lpips_ok else None,
            'rotation': rotation, 'adv+rotation': [*adv, *rotation]}


COLUMNS = [('psnr', 'PSNR dB', '{:.2f}'), ('ssim', 'SSIM', '{:.3f}'), ('hf_ratio', 'HF energy ratio', '{:.3f}'),
           ('gmsd', 'GMSD', '{:.4f}'), ('lap_var_ratio', 'Laplacian var ratio', '{:.3f}'), ('lpips', 'LPIPS', '{:.3f}'),
           ('usage', 'usage', '{:.1%}'), ('artifact', 'artifact', '{:.2f}')]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--budget-minutes', type=float, default=8.0, help='training budget per arm (default 8)')
    p.add_argument('--out', default='runs/bench-sharpness')
    p.add_argument('--device', default='auto')
    p.add_argument('--eval-frames', type=int, default=320, help='held-out frames evaluated per source (default 320)')
    p.add_argument('--sample-frames', type=int, default=6)
    p.add_argument('--only', default=None, help='comma-separated arms to run (default: all that can run)')
    p.add_argument('--adv', default='loss.adv=0.1,loss.adv_start=2000,loss.adv_warmup=500,loss.disc_layers=2,'
                   'loss.disc_channels=32,loss.disc_lr=1e-3', help='the adversarial settings (comma-separated overrides)')
    p.add_argument('--other-game', default='crafter', help="a rendered game the arms never train on, evaluated too ('' for none)")
    p.add_argument('--set', action='append', default=[], metavar='SECTION.FIELD=VALUE', help='override the cpu preset for every arm')
    args = p.parse_args(argv)

    out, device = Path(args.out), resolve_device(args.device)
    try: build_lpips('vgg', device); lpips_train_ok = True
    except LPIPSUnavailable as e: lpips_train_ok, why = False, str(e)
    plan = arms(args.adv.split(','), lpips_train_ok)
    chosen = [a.strip() for a in args.only.split(',')] if args.only else list(plan)
    base = apply_overrides(get_preset('cpu'), [*args.set, *RUN_SETTINGS, f'run.budget_minutes={args.budget_minutes}',
                                               f'run.device={device}'])
    splits = load_splits(base, progress=True)
    val = splits[1].frames[:args.eval_frames]
    alt = alt_val_frames(base, progress=True).frames[:len(val)]
    sources = [('val', val), ('val-alt', alt)]
    if args.other_game and args.other_game != base.data.source:
        name, other = next(eval_sources(base, [args.other_game], progress=True))
        sources.append((name, other.frames[:len(val)]))
    lp = lpips_metric(True, device, 'alex')   # graded by a network no arm trained with (adv+lpips trains with vgg)
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, device {device}; budget {args.budget_minutes:g} min per arm; LPIPS: {lp[1]}', flush=True)

    results, models, skipped = {}, {}, {}
    for arm in chosen:
        if plan[arm] is None:
            skipped[arm] = f'not run: LPIPS cannot train here ({why.split(". ")[0]})'
            print(f'{arm}: {skipped[arm]}', flush=True); continue
        cfg = apply_overrides(base, plan[arm])
        cfg.name = arm.replace('+', '-')
        print(f'training {arm}: {" ".join(plan[arm]) or "cpu preset"}', flush=True)
        model, info = train_one(arm, cfg, splits, out / cfg.name)
        r = evaluate_model(model, cfg, sources, out / cfg.name, arm, batch_size=32, sample_frames=args.sample_frames, lpips=lp)
        r.update(training=info, config=config_to_dict(cfg), overrides=plan[arm])
        write_json(out / cfg.name / 'eval.json', r)
        results[arm], models[arm] = r, model
        m = r['sources']['val']
        print('  val: ' + ', '.join(f'{label} {fmt_metric(m.get(k), f)}' for k, label, f in COLUMNS), flush=True)

    pick = val[sample_indices(len(val), args.sample_frames)]
    recon = {a: reconstruct(mdl, frames_to_tensor(pick, device))[0].float().cpu() for a, mdl in models.items()}
    grid = save_grid(compare_grid(recon, pick, scale=2, zoom=True), out / 'compare_heldout.png')
    probes = probe_frames(base.data.width, base.data.height)
    probe_grid = save_grid(compare_grid({a: reconstruct_unit(mdl, probes.to(device)).cpu() for a, mdl in models.items()},
                                        probes, scale=2), out / 'compare_probe.png')

    rows = []
    for arm, r in results.items():
        t = r['training']
        for src, m in r['sources'].items():
            rows.append([arm, src, *[fmt_metric(m.get(k), f) for k, _, f in COLUMNS], str(t['steps']), f"{t['steps_per_s']:.2f}"])
    table = markdown_table(['arm', 'source', *[label for _, label, _ in COLUMNS], 'steps', 'steps/s'], rows)
    md = (f'# Sharpness benchmark: {args.budget_minutes:g} min of training per arm\n\n'
          f'Machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, device {device}, one run per arm. '
          f'{len(splits[0])} training frames of {base.data.source}; {len(val)} held-out frames per source; the `cpu` preset '
          f'({base.data.width}x{base.data.height} -> {base.latent_grid[0]}x{base.latent_grid[1]}).\n\n'
          f'Adversarial settings: `{" ".join(args.adv.split(","))}`.\n\n{table}\n\n'
          + ''.join(f'- {a}: {why_not}\n' for a, why_not in skipped.items())
          + f'\nLPIPS (evaluation, alex): {lp[1]}\n\n'
          'HF energy ratio: spectral energy of the reconstruction above the cutoff over the input\'s (1 = as much fine '
          'detail; added noise raises it too). GMSD: gradient magnitude similarity deviation (0 = same edges at the same '
          'places; lower is better). Laplacian variance ratio: variance of the Laplacian of the reconstruction over the '
          'input\'s.\n\nGrids under --out: compare_heldout.png (every arm on the same held-out frames, with zoomed textured '
          'crops), compare_probe.png (uniform/gradient probe).\n')
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.md').write_text(md)
    write_json(out / 'results.json', {'budget_minutes': args.budget_minutes, 'device': str(device), 'adv': args.adv,
                                       'lpips': lp[1], 'skipped': skipped, 'arms': results,
                                       'grids': [str(grid), str(probe_grid)]})
    print('\n' + md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
