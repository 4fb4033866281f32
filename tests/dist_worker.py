"""Run by tests/test_distributed.py under torchrun: trains a tiny config and saves this rank's final state.

Fault injection for the tests (never used by the package): --raise-at STEP makes rank --fault-rank raise at that
step; --sigterm-at STEP makes it send itself SIGTERM, as Kaggle does at the end of a session; --nan-at STEP makes its
loss NaN at that step (the other ranks' losses stay finite)."""
import argparse, os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from conftest import synthetic_frames
from vqvae_kaggle.config import apply_overrides
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.train import Trainer

p = argparse.ArgumentParser()
p.add_argument('out'); p.add_argument('--set', action='append', default=[])
p.add_argument('--raise-at', type=int); p.add_argument('--sigterm-at', type=int); p.add_argument('--nan-at', type=int)
p.add_argument('--fault-rank', type=int, default=1)
a = p.parse_args()
rank = int(os.environ.get('RANK', 0))
torch.set_num_threads(1)
cfg = apply_overrides(get_preset('cpu'), a.set)
splits = (synthetic_frames(48, cfg.data.height, cfg.data.width, seed=1), synthetic_frames(8, cfg.data.height, cfg.data.width, seed=2))
t = Trainer(cfg, out_dir=a.out, splits=splits, progress=False)
if rank == a.fault_rank and (a.raise_at is not None or a.sigterm_at is not None):
    step = t.train_step
    def faulty(batch):
        if t.step == a.raise_at: raise RuntimeError(f'injected failure on rank {rank} at step {t.step}')
        if t.step == a.sigterm_at: os.kill(os.getpid(), signal.SIGTERM)
        return step(batch)
    t.train_step = faulty
if rank == a.fault_rank and a.nan_at is not None:
    loss = t.loss_fn.forward
    t.loss_fn.forward = lambda *args, **kw: (lambda l, parts: (l * float('nan') if t.step == a.nan_at else l, parts))(*loss(*args, **kw))
summary = t.fit()
torch.save({'model': t.model.state_dict(), 'step': t.step, 'epoch': t.epoch, 'stopped': summary['stopped'],
            'skipped_steps': t.health.skipped_steps, 'optimizer': t.optimizer.state_dict(),
            'discriminator': t.disc.state_dict() if t.disc else None,
            'disc_optimizer': t.disc_optimizer.state_dict() if t.disc else None}, Path(a.out) / f'rank{rank}.pt')
