"""Every preset of the experiment log builds, has the latent grid the log describes, and trains one step."""
import math, pytest, torch
from vqvae_kaggle.config import apply_overrides
from vqvae_kaggle.presets import PRESETS, get_preset
from vqvae_kaggle.train import Trainer
from vqvae_kaggle.losses import lpips_weight

LATENT = {'v1.0': (16, 16), 'v1.0.1': (16, 16), 'v1.0.1-lpips': (16, 16), 'v2.0': (16, 9), 'v2.0.1': (16, 9),
          'v2.0.2': (16, 9), 'v2.0.3': (16, 9), 'v2.0.4': (16, 9), 'v2.0.5': (16, 9), 'v2.1.0': (32, 18),
          'default': (32, 18), 't4x2': (32, 18), 'h100': (32, 18), 'cpu': (32, 18)}

def test_every_preset_is_checked():
    assert set(LATENT) == set(PRESETS)

@pytest.mark.parametrize('name', list(PRESETS))
def test_preset_builds_and_trains_one_step(name, tmp_path, make_frames):
    cfg = get_preset(name)
    assert cfg.latent_grid == LATENT[name]
    # one step at the preset's own frame size and architecture; tiny batch, LPIPS wiring with a random
    # backbone where the preset asks for LPIPS (no AlexNet weights offline), wandb off
    cfg = apply_overrides(cfg, ['optim.batch_size=2', 'run.wandb=disabled', 'run.val_frames=2', 'run.sample_frames=2',
                                'run.budget_minutes=none', 'run.epochs=1', 'run.steps_per_epoch=1',
                                'loss.lpips_start=0', 'loss.adv_start=0'])   # LPIPS and the discriminator from the first step, to check their wiring
    h, w = cfg.data.height, cfg.data.width
    splits = (make_frames(4, h, w, seed=1), make_frames(2, h, w, seed=2))
    lpips_model = None
    if cfg.loss.lpips > 0:
        from vqvae_kaggle.losses import build_lpips
        lpips_model = build_lpips(cfg.loss.lpips_net, random_backbone=True)
    t = Trainer(cfg, out_dir=tmp_path, splits=splits, progress=False, lpips_model=lpips_model)
    out = t.train_step(t.loader.epoch_batches(0).__next__())
    assert out is not None and math.isfinite(float(out['loss']))
    if lpips_weight(cfg.loss, 0) > 0: assert float(out['lpips']) > 0
    if cfg.loss.adv > 0:   # the GPU presets: the discriminator trained and the generator's term reached the loss
        assert t.disc is not None and math.isfinite(float(out['d_loss'])) and math.isfinite(float(out['g_adv']))
    x_hat, aux = t.model(torch.zeros(1, 3, h, w))
    assert x_hat.shape == (1, 3, h, w) and aux['indices'].shape == (1, *LATENT[name][::-1])
