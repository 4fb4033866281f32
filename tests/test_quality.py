"""Short trainings that show the quantizer options fix the seed's codebook collapse.

The seed's textbook EMA quantizer (random-normal codebook, no k-means init, no dead-code restarts, lookup in the
full latent dimension) loses most of its codes in the first update: codes nobody chose get a Laplace-smoothed count
near `eps`, the EMA divides their running sum by it, and they fly off to norms of ~1e5, never to be chosen again.
The options-enabled quantizer (k-means init, dead-code restarts, l2-normalised low-dimensional lookup) keeps the
codebook in use. (That the probe separates a transposed-conv decoder's grid from nearest+conv is covered in
test_metrics.py::test_probe_separates_transposed_from_nearest_upsampling.)
"""
import math
import numpy as np
import pytest, torch

from vqvae_kaggle.config import apply_overrides
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.evaluate import evaluate
from vqvae_kaggle.train import Trainer

TINY = ['data.width=64', 'data.height=32', 'model.channels=16,32', 'model.res_blocks=1', 'model.embed_dim=32',
        'quantizer.codebook_size=64', 'optim.batch_size=8', 'optim.lr=2e-3', 'optim.warmup_steps=5',
        'run.wandb=disabled', 'run.val_frames=8', 'run.sample_frames=2', 'run.budget_minutes=none',
        'run.epochs=5', 'run.threads=1', 'loss.lpips=0', 'data.aug_scale=0', 'data.aug_blur=0', 'data.aug_color=0']
# the seed had no collapse remedy: the trainer's (a dead-code restart on a collapse alert, tested in test_train.py)
# is switched off here, so that this test isolates what the quantizer options themselves do
TEXTBOOK = ['quantizer.kmeans_init=false', 'quantizer.restart_dead=false', 'quantizer.l2_normalize=false',
            'quantizer.lookup_dim=none', 'model.upsample=transpose', 'run.collapse_min_usage=0']
OPTIONS = ['quantizer.kmeans_init=true', 'quantizer.restart_dead=true', 'quantizer.l2_normalize=true',
           'quantizer.lookup_dim=8']


@pytest.fixture(scope='module')
def splits():
    from conftest import synthetic_frames
    return synthetic_frames(96, 32, 64, seed=1, episodes=8), synthetic_frames(32, 32, 64, seed=2, episodes=4)


def train_tiny(extra, splits, out):
    cfg = apply_overrides(get_preset('cpu'), TINY + extra)
    t = Trainer(cfg, out_dir=out, resume=False, splits=splits, progress=False)
    summary = t.fit()
    return summary, evaluate(t.model, splits[1].frames, batch_size=16), t.model.quantizer


def test_options_keep_codebook_in_use_where_textbook_collapses(splits, tmp_path):
    _, textbook, q_textbook = train_tiny(TEXTBOOK, splits, tmp_path / 'textbook')
    summary, fixed, q_fixed = train_tiny(OPTIONS, splits, tmp_path / 'fixed')
    assert summary['step'] == 60 and summary['skipped_steps'] == 0
    # the textbook codebook collapses to a handful of codes ...
    assert textbook['usage'] < 0.15, textbook
    assert float(q_textbook.embed.norm(dim=1).max()) > 1e3   # the flown-off codes of the Laplace-smoothing trap
    # ... the options keep most of them alive and in use on held-out frames
    assert fixed['usage'] > 0.5 and fixed['usage'] > 4 * textbook['usage'], (fixed, textbook)
    assert fixed['perplexity'] > 4 * textbook['perplexity']
    assert q_fixed.code_stats()['dead_codes'] < 0.25 * q_fixed.codebook_size
    # and more codes buy a better reconstruction of the same frames in the same steps
    assert fixed['psnr'] > textbook['psnr'] + 1.0, (fixed['psnr'], textbook['psnr'])


def test_short_training_is_deterministic(splits, tmp_path):
    a = train_tiny(OPTIONS + ['run.epochs=1'], splits, tmp_path / 'a')[1]
    b = train_tiny(OPTIONS + ['run.epochs=1'], splits, tmp_path / 'b')[1]
    for k in ('psnr', 'usage', 'perplexity', 'artifact'):
        assert a[k] == b[k], (k, a[k], b[k])
