"""`vqvae-kaggle eval` end to end: checkpoints from real (short) trainings, every reported number, LPIPS reported as
unavailable (never 0) without its weights, and several checkpoints compared on the same frames."""
import json, math, warnings
import numpy as np
import pytest, torch
from PIL import Image

from vqvae_kaggle import evaluate as ev
from vqvae_kaggle.config import get_preset, apply_overrides
from vqvae_kaggle.data import load_splits
from vqvae_kaggle.losses import LPIPSUnavailable, build_lpips
from vqvae_kaggle.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*single episode")  # one .npy array is one episode
W, H = 64, 32
METRICS = {'psnr', 'ssim', 'lpips', 'lpips_status', 'usage', 'perplexity', 'dead_codes', 'artifact', 'grid', 'frames'}
PROBE = {'probe_psnr', 'probe_artifact', 'probe_grid_energy', 'probe_peak_ratio', 'probe_peak_period', 'frames'}


def tiny_cfg(tmp_path, *extra):
    return apply_overrides(get_preset('cpu'), [
        f'data.source={tmp_path / "frames.npy"}', f'data.cache_dir={tmp_path / "cache"}', f'data.width={W}', f'data.height={H}',
        'model.channels=8,16', 'model.res_blocks=0', 'model.embed_dim=8', 'quantizer.codebook_size=32',
        'quantizer.lookup_dim=4', 'optim.batch_size=4', 'run.wandb=disabled', 'run.val_frames=4', 'run.sample_frames=2',
        'run.budget_minutes=none', 'run.epochs=1', 'run.steps_per_epoch=3', 'run.threads=1', *extra])


@pytest.fixture
def runs(tmp_path, make_frames):
    "Two short trainings on the same .npy frames (nearest and transposed upsampling): their run folders and config."
    np.save(tmp_path / 'frames.npy', make_frames(24, H, W, seed=3).frames)
    folders = {}
    for name, up in (('nearest', 'nearest'), ('transpose', 'transpose')):
        cfg = tiny_cfg(tmp_path, f'model.upsample={up}', f'run.out_dir={tmp_path / name}')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # one array is one episode: split into contiguous blocks, with a warning
            Trainer(cfg, progress=False).fit()
        folders[name] = tmp_path / name
    return folders, cfg


@pytest.fixture
def no_lpips(monkeypatch):
    "LPIPS weights missing, as offline: build_lpips raises, as it does without its backbone file."
    def unavailable(*a, **k): raise LPIPSUnavailable('LPIPS (alex) needs the backbone weights file /nowhere/alexnet.pth')
    monkeypatch.setattr(ev, 'build_lpips', unavailable)


def test_eval_reports_every_metric_and_grids(runs, no_lpips, tmp_path):
    folders, cfg = runs
    r = ev.run_eval(folders['nearest'], data=['val', str(tmp_path / 'frames.npy')], device='cpu', batch_size=4)
    assert set(r['sources']) == {'val', 'frames'}
    for m in r['sources'].values():
        assert METRICS <= set(m)
        assert 0 < m['usage'] <= 1 and m['dead_codes'] == 32 - m['used_codes'] and 1 <= m['perplexity'] <= 32
        assert math.isfinite(m['psnr']) and -1 <= m['ssim'] <= 1 and m['artifact'] >= 0
        assert m['lpips'] is None and m['lpips_status'].startswith('unavailable: ') and 'alexnet' in m['lpips_status']
        # inputs over reconstructions over differences, at scale 2, with a title band
        assert Image.open(m['grid']).width == 2 + len(ev.sample_indices(m['frames'], 8)) * (2 * W + 2)
    assert r['sources']['frames']['frames'] == 24 and r['sources']['val']['frames'] < 24
    assert PROBE <= set(r['probe']) and set(r['probe']['frames']) >= {'sky', 'sky_gradient', 'grey_horizontal'}
    assert Image.open(r['probe_grid']).size[0] > 2 * W
    saved = json.loads((folders['nearest'] / 'eval' / 'eval.json').read_text())
    assert saved['sources']['val']['lpips'] is None              # null in the JSON, never 0
    md = (folders['nearest'] / 'eval' / 'eval.md').read_text()
    assert '| n/a |' in md and 'LPIPS unavailable' in md


def test_eval_with_lpips_model_reports_a_number(runs):
    folders, _ = runs
    r = ev.run_eval(folders['nearest'], device='cpu', lpips=build_lpips('alex', random_backbone=True))
    m = r['sources']['val']
    assert m['lpips_status'] == 'ok' and m['lpips'] > 0


def test_lpips_metric_without_weights_is_a_reason_never_a_silent_zero(tmp_path, monkeypatch):
    "TORCH_HOME empty and the download failing (as offline): no model, and the reason names the file it needs and where."
    import urllib.error
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty-torch-home'))
    monkeypatch.setattr('torchvision.models._api.load_state_dict_from_url',
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError('no internet')))
    model, status = ev.lpips_metric(True)
    assert model is None and status.startswith('unavailable: ')
    assert str(tmp_path / 'empty-torch-home' / 'hub' / 'checkpoints' / 'alexnet-owt-7be5be79.pth') in status
    assert ev.lpips_metric(False) == (None, 'not requested')


def test_compare_checkpoints_on_the_same_frames(runs, no_lpips, tmp_path):
    folders, cfg = runs
    out = tmp_path / 'cmp'
    s = ev.run_eval_many([folders['nearest'], folders['transpose']], out_dir=out, device='cpu', sample_frames=3)
    assert [(r['model'], r['source']) for r in s['table']] == [('nearest', 'val'), ('transpose', 'val')]
    # each model evaluated on the first checkpoint's held-out frames: the same numbers as evaluating it directly
    val = load_splits(cfg, progress=False)[1].frames
    model, _, _ = ev.load_tokenizer(folders['transpose'])
    assert s['models']['transpose']['sources']['val']['psnr'] == pytest.approx(ev.evaluate(model, val)['psnr'], abs=1e-5)
    for name in ('nearest', 'transpose'):
        assert (out / name / 'eval.json').is_file() and (out / name / 'probe.png').is_file()
        assert (out / name / 'val_reconstructions.png').is_file()
    # compare grid: inputs + two models side by side, one row per shown frame
    img = Image.open(s['compare_grids']['val'])
    assert img.width == 2 + 3 * (2 * W + 2)
    md = (out / 'comparison.md').read_text()
    assert 'nearest' in md and 'transpose' in md and 'probe grid energy' in md
    saved = json.loads((out / 'comparison.json').read_text())
    assert [r['model'] for r in saved['table']] == ['nearest', 'transpose'] and saved['table'][0]['lpips'] is None


def test_compare_refuses_mismatched_names(runs):
    folders, _ = runs
    with pytest.raises(ValueError, match='distinct name'):
        ev.run_eval_many([folders['nearest'], folders['transpose']], names=['a', 'a'], device='cpu', lpips=False)
    with pytest.raises(ValueError, match='no checkpoints'):
        ev.run_eval_many([], device='cpu')
