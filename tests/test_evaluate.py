"""`vqvae-kaggle eval` end to end: checkpoints from real (short) trainings, every reported number, LPIPS reported as
unavailable (never 0) without its weights, and several checkpoints compared on the same frames."""
import json, math, warnings
import numpy as np
import pytest, torch
from PIL import Image

from vqvae_kaggle import evaluate as ev, report as rp, checkpoint as ck, fid
from pathlib import Path
from vqvae_kaggle.config import apply_overrides, config_to_dict
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.data import load_splits
from vqvae_kaggle.losses import LPIPSUnavailable, build_lpips
from vqvae_kaggle.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*single episode")  # one .npy array is one episode
W, H = 64, 32
METRICS = {'psnr', 'ssim', 'lpips', 'lpips_status', 'lpips_net', 'lpips_trained_net', 'usage', 'perplexity', 'dead_codes',
           'artifact', 'grid', 'frames', 'hf_ratio', 'gmsd', 'lap_var_ratio', 'rfid', 'rfid_status'}
FID_FILE = 'pt_inception-2015-12-05-6726825d.pth'
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
def no_lpips(monkeypatch, tmp_path):
    "LPIPS weights missing, as offline: build_lpips raises, as it does without its backbone file. No FID weights either."
    def unavailable(*a, **k): raise LPIPSUnavailable('LPIPS (alex) needs the backbone weights file /nowhere/alexnet.pth')
    monkeypatch.setattr(ev, 'build_lpips', unavailable)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty-torch-home'))


def test_eval_reports_every_metric_and_grids(runs, no_lpips, tmp_path):
    folders, cfg = runs
    r = rp.run_eval(folders['nearest'], data=['val', str(tmp_path / 'frames.npy')], device='cpu', batch_size=4)
    assert set(r['sources']) == {'val', 'frames'}
    for m in r['sources'].values():
        assert METRICS <= set(m)
        assert 0 < m['usage'] <= 1 and m['dead_codes'] == 32 - m['used_codes'] and 1 <= m['perplexity'] <= 32
        assert math.isfinite(m['psnr']) and -1 <= m['ssim'] <= 1 and m['artifact'] >= 0
        assert m['lpips'] is None and m['lpips_status'].startswith('unavailable: ') and 'alexnet' in m['lpips_status']
        assert (m['lpips_net'], m['lpips_trained_net']) == ('alex', None)    # the cpu preset trains without LPIPS
        assert m['rfid'] is None and FID_FILE in m['rfid_status'] and 'pip install pytorch-fid' in m['rfid_status']
        assert 0 < m['hf_ratio'] and 0 < m['gmsd'] < 1 and 0 < m['lap_var_ratio']
        # inputs over reconstructions over differences over the zoomed patch, at scale 2, with a title band
        grid = Image.open(m['grid'])
        assert grid.width == 2 + len(ev.sample_indices(m['frames'], 8)) * (2 * W + 2)
        assert 0 < grid.height - (2 + 4 * (2 * H + 2)) < 30
    assert r['sources']['frames']['frames'] == 24 and r['sources']['val']['frames'] < 24
    # the numbers are this model's on these frames (ranges alone would hold for any model): recomputed by hand
    from vqvae_kaggle.metrics import ssim
    m, model = r['sources']['frames'], ck.load_tokenizer(folders['nearest'])[0]
    frames = torch.from_numpy(np.load(tmp_path / 'frames.npy')).permute(0, 3, 1, 2)
    x_hat, idx = ev.reconstruct(model, frames)
    x = frames.double() / 255
    mse = ((x - x_hat.double()) ** 2).mean(dim=(1, 2, 3))
    assert m['psnr'] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), abs=1e-3)
    assert m['ssim'] == pytest.approx(float(ssim(x.float(), x_hat.float())), abs=1e-4)
    counts = torch.bincount(idx.reshape(-1), minlength=32).double()
    p = counts[counts > 0] / counts.sum()
    assert (m['used_codes'], m['usage']) == (int((counts > 0).sum()), int((counts > 0).sum()) / 32)
    assert m['perplexity'] == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-9)
    assert PROBE <= set(r['probe']) and set(r['probe']['frames']) >= {'sky', 'sky_gradient', 'grey_horizontal'}
    assert Image.open(r['probe_grid']).size[0] > 2 * W
    saved = json.loads((folders['nearest'] / 'eval' / 'eval.json').read_text())
    assert saved['sources']['val']['lpips'] is None and saved['sources']['val']['rfid'] is None   # null in the JSON, never 0
    md = (folders['nearest'] / 'eval' / 'eval.md').read_text()
    assert '| n/a |' in md and 'LPIPS unavailable' in md and 'rFID unavailable' in md and 'GMSD' in md


def test_eval_with_lpips_model_reports_a_number(runs):
    folders, _ = runs
    r = rp.run_eval(folders['nearest'], device='cpu', lpips=build_lpips('alex', random_backbone=True))
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
    s = rp.run_eval_many([folders['nearest'], folders['transpose']], out_dir=out, device='cpu', sample_frames=3)
    assert [(r['model'], r['source']) for r in s['table']] == [('nearest', 'val'), ('transpose', 'val')]
    # each model evaluated on the first checkpoint's held-out frames: the same numbers as evaluating it directly
    val = load_splits(cfg, progress=False)[1].frames
    model, _, _ = ck.load_tokenizer(folders['transpose'])
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
        rp.run_eval_many([folders['nearest'], folders['transpose']], names=['a', 'a'], device='cpu', lpips=False)
    with pytest.raises(ValueError, match='no checkpoints'):
        rp.run_eval_many([], device='cpu')


# -- the slim tokenizer export ----------------------------------------------------------------------------------------
from vqvae_kaggle.checkpoint import CheckpointError
from vqvae_kaggle.model import build_tokenizer, encode_frames


@pytest.fixture
def trained(tmp_path, make_frames):
    "One short training on 24 blocky frames: (its newest checkpoint, its config, the frames)."
    frames = make_frames(24, H, W, seed=3).frames
    np.save(tmp_path / 'frames.npy', frames)
    cfg = tiny_cfg(tmp_path, f'run.out_dir={tmp_path / "run"}')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        Trainer(cfg, progress=False).fit()
    return ck.resolve_checkpoint(tmp_path / 'run'), cfg, frames


def test_export_reproduces_the_checkpoint_codes_and_is_much_smaller(trained, tmp_path):
    ckpt, cfg, frames = trained
    exp = ck.export_tokenizer(tmp_path / 'run', tmp_path / 'out' / 'tok')          # a run folder in, <out>.safetensors out
    assert exp == tmp_path / 'out' / 'tok.safetensors' and ck.is_export(exp) and not ck.is_export(ckpt)
    m_ckpt, cfg_ckpt, st_ckpt = ck.load_tokenizer(ckpt)
    m_exp, cfg_exp, st_exp = ck.load_tokenizer(exp)
    assert not m_exp.training and cfg_exp == cfg_ckpt
    np.testing.assert_array_equal(encode_frames(m_exp, frames), encode_frames(m_ckpt, frames))
    x = ev.frames_to_tensor(frames[:6], 'cpu')
    assert torch.equal(ev.reconstruct(m_exp, x)[0], ev.reconstruct(m_ckpt, x)[0])
    # trainer state left behind; provenance kept
    manifest = json.loads(ckpt.with_suffix('.json').read_text())
    assert (st_exp['step'], st_exp['epoch'], st_exp['path']) == (st_ckpt['step'], st_ckpt['epoch'], str(exp))
    assert st_exp['provenance'] == {'source_checkpoint': str(ckpt.resolve()), 'source_sha256': manifest['sha256']}
    assert 'optimizer' not in st_exp and st_exp['package_version']
    assert exp.stat().st_size < ckpt.stat().st_size / 2.5                      # Adam's two moments per weight are gone
    # found by its first bytes, whatever its name; the same checkpoint exports to the same bytes
    renamed = tmp_path / 'tokenizer.bin'; renamed.write_bytes(exp.read_bytes())
    np.testing.assert_array_equal(encode_frames(ck.load_tokenizer(renamed)[0], frames[:4]), encode_frames(m_ckpt, frames[:4]))
    assert ck.export_tokenizer(ckpt, tmp_path / 'again.safetensors').read_bytes() == exp.read_bytes()


def test_broken_exports_are_clear_errors_naming_the_file(trained, tmp_path):
    import safetensors.torch
    ckpt, cfg, _ = trained
    exp = ck.export_tokenizer(ckpt, tmp_path / 'tok.safetensors')
    raw = exp.read_bytes()
    cases = {'cut.safetensors': raw[:len(raw) - 100], 'stub.safetensors': raw[:5], 'header.safetensors': raw[:40],
             'flip.safetensors': raw[:-3] + bytes([raw[-3] ^ 0x40]) + raw[-2:]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=f'{name}.* (corrupt|truncated)'):
            ck.load_tokenizer(tmp_path / name)
    # weights that the config does not describe: refused, never half-loaded
    weights, meta = ck.read_export(exp)
    meta = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in meta.items()}
    meta['config'] = json.dumps(config_to_dict(apply_overrides(cfg, ['quantizer.codebook_size=64'])))
    mismatch = tmp_path / 'mismatch.safetensors'
    safetensors.torch.save_file(weights, mismatch, metadata=meta)
    with open(mismatch, 'rb') as f: n = int.from_bytes(f.read(8), 'little')
    meta['weights_sha256'] = __import__('hashlib').sha256(mismatch.read_bytes()[8 + n:]).hexdigest()
    safetensors.torch.save_file(weights, mismatch, metadata=meta)
    with pytest.raises(CheckpointError, match='mismatch.safetensors does not match its own config'):
        ck.load_tokenizer(mismatch)
    safetensors.torch.save_file({'w': torch.zeros(3)}, tmp_path / 'foreign.safetensors')
    with pytest.raises(CheckpointError, match='foreign.safetensors is a safetensors file but not a vqvae-kaggle tokenizer'):
        ck.load_tokenizer(tmp_path / 'foreign.safetensors')


def test_eval_of_an_export_matches_eval_of_its_checkpoint(trained, tmp_path):
    ckpt, _, _ = trained
    exp = ck.export_tokenizer(ckpt, tmp_path / 'export' / 'tok.safetensors')
    data = [str(tmp_path / 'frames.npy')]
    a = rp.run_eval(ckpt, data=data, device='cpu', batch_size=8, lpips=False)
    b = rp.run_eval(exp, data=data, device='cpu', batch_size=8, lpips=False)
    assert b['checkpoint'] == str(exp) and (b['step'], b['epoch']) == (a['step'], a['epoch'])
    assert Path(b['json']) == tmp_path / 'export' / 'eval' / 'eval.json'         # beside the export
    assert Path(a['json']) == tmp_path / 'run' / 'eval' / 'eval.json'            # in the run folder, as before
    for k in ('psnr', 'ssim', 'usage', 'perplexity', 'token_change', 'bits_per_frame'):
        assert b['sources']['frames'][k] == a['sources']['frames'][k], k
    assert b['probe']['probe_psnr'] == a['probe']['probe_psnr']


# -- tokens over time ------------------------------------------------------------------------------------------------
class NoisyEncoder(torch.nn.Module):
    "Seeded Gaussian noise on the latents: codes that flicker although the frames do not move."
    def __init__(self, enc, scale):
        super().__init__()
        self.enc, self.scale, self.gen = enc, scale, torch.Generator().manual_seed(0)

    def forward(self, x):
        z = self.enc(x)
        return z + self.scale * torch.randn(z.shape, generator=self.gen).to(z)


def still_and_moving(frames):
    "Episode 0: one frame five times. Episode 1: another frame, then with a 2x2 patch (latent cell (5, 10)) changed, twice."
    a, b = frames[0], frames[1]
    moved = b.copy(); moved[10:12, 20:22] = 255 - moved[10:12, 20:22]
    return np.stack([a] * 5 + [b, moved, moved]), np.array([0] * 5 + [1] * 3)


def test_temporal_measures_on_constructed_sequences(trained):
    import copy
    ckpt, cfg, frames = trained
    model = ck.load_tokenizer(ckpt)[0]          # the cpu preset's encoder has no normalisation: it sees 6 pixels around a cell
    seq, eps = still_and_moving(frames)
    m = ev.evaluate(model, seq, batch_size=4, episodes=eps)
    grid = encode_frames(model, seq[:1]).shape[1:]
    assert m['latent_grid'] == [16, 32] == list(grid) and m['frame_pairs'] == 6
    assert m['token_change_static'] == 0.0                    # nothing moved there: no token changed
    assert m['static_cells'] == 1 - 9 / (16 * 32) / 6          # the changed cell and its 8 neighbours, in 1 of 6 pairs
    assert m['bits_per_frame'] == 16 * 32 * 5                  # 32 codes: 5 bits per token
    assert 0 < m['entropy_bits_per_frame'] <= m['bits_per_frame'] and 0 <= m['cond_bits_per_frame'] <= m['entropy_bits_per_frame'] + 1e-9
    codes = encode_frames(model, seq)
    changed = codes[6] != codes[5]
    assert changed.any() and not changed[np.ix_(range(16), [c for c in range(32) if abs(c - 10) > 1])].any()
    assert not changed[[r for r in range(16) if abs(r - 5) > 1]].any()     # confined to the cells around the patch
    assert m['token_change'] == pytest.approx(changed.sum() / (16 * 32) / 6)
    # identical consecutive frames: no change at all
    still = ev.evaluate(model, np.stack([frames[2]] * 4), episodes=np.zeros(4, int))
    assert (still['token_change'], still['token_change_static'], still['static_cells']) == (0.0, 0.0, 1.0)
    # a tokenizer whose codes flicker: reported on the static cells
    noisy = copy.deepcopy(model); noisy.encoder = NoisyEncoder(noisy.encoder, 2.0)
    n = ev.evaluate(noisy, np.stack([frames[2]] * 4), episodes=np.zeros(4, int))
    assert n['static_cells'] == 1.0 and n['token_change_static'] > 0.1 and n['token_change'] == n['token_change_static']
    assert n['cond_bits_per_frame'] > still['cond_bits_per_frame'] == 0.0
    # no episode with two frames: no temporal measures
    assert 'token_change' not in ev.evaluate(model, seq, episodes=np.arange(len(seq)))
    assert 'token_change' not in ev.evaluate(model, seq)


def test_eval_reports_temporal_measures_only_for_episodes(trained, tmp_path):
    ckpt, _, frames = trained
    seq, eps = still_and_moving(frames)
    np.savez(tmp_path / 'seq.npz', frames=seq, episodes=eps)
    np.savez(tmp_path / 'single.npz', frames=seq, episodes=np.arange(len(seq)))   # every frame its own episode
    r = rp.run_eval(ckpt, data=[str(tmp_path / 'seq.npz'), str(tmp_path / 'single.npz')], device='cpu', lpips=False)
    s, lone = r['sources']['seq'], r['sources']['single']
    assert s['frame_pairs'] == 6 and s['token_change_static'] == 0.0 and 'token_change' not in lone
    saved = json.loads(Path(r['json']).read_text())['sources']['seq']
    assert saved['token_change'] == s['token_change'] and saved['latent_grid'] == [16, 32]
    md = Path(r['json']).with_name('eval.md').read_text()
    assert 'token change, static cells' in md and 'bits/frame given previous' in md and 'flicker' in md
    rows = {line.split(' | ')[1]: line for line in md.splitlines()[2:] if line.startswith('| ')}   # model | source | ...
    assert rows['single'].rstrip(' |').endswith('n/a | n/a | n/a | n/a | n/a | n/a')
    summary = rp.eval_summary(r)
    assert 'seq over time: 6 consecutive pairs' in summary and 'single over time' not in summary
    # the run's own held-out split (one .npy array: one episode, contiguous) has them too
    assert 'token_change' in rp.run_eval(ckpt, device='cpu', lpips=False)['sources']['val']



# -- rFID ------------------------------------------------------------------------------------------------------------
def no_downloads(monkeypatch):
    "Any attempt to fetch weights fails the test (offline it would hang)."
    def refuse(*a, **k): raise AssertionError(f'a download was attempted: {a}')
    import pytorch_fid.inception
    monkeypatch.setattr(pytorch_fid.inception, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


def test_fid_weights_file_is_the_one_pytorch_fid_loads():
    import pytorch_fid.inception
    assert fid.FID_WEIGHTS_URL == pytorch_fid.inception.FID_WEIGHTS_URL
    assert fid.fid_weights_path().name == FID_FILE and fid.fid_weights_path().parent == Path(torch.hub.get_dir()) / 'checkpoints'


def test_rfid_without_weights_is_a_reason_naming_the_file(tmp_path, monkeypatch):
    "TORCH_HOME empty: no extractor, no download attempted, and the reason names the file, where it comes from and the pip command."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty-torch-home'))
    no_downloads(monkeypatch)
    model, status = fid.fid_metric(True)
    assert model is None and status.startswith('unavailable: ')
    assert str(tmp_path / 'empty-torch-home' / 'hub' / 'checkpoints' / FID_FILE) in status
    assert fid.FID_WEIGHTS_URL in status and 'pip install pytorch-fid' in status
    assert fid.fid_metric(False) == (None, 'not requested')


def test_rfid_with_a_corrupt_weights_file_is_a_reason(tmp_path, monkeypatch):
    "The file is there but is not the weights (an interrupted copy): pytorch-fid's loader fails, the report says so."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    no_downloads(monkeypatch)
    path = tmp_path / 'hub' / 'checkpoints' / FID_FILE
    path.parent.mkdir(parents=True); path.write_bytes(b'not a checkpoint')
    model, status = fid.fid_metric(True)
    assert model is None and status.startswith('unavailable: ') and str(path) in status and 'could not be loaded' in status


@pytest.mark.filterwarnings('ignore:The `disp` argument is deprecated')   # inside pytorch-fid's scipy call
def test_frechet_distance_by_hand_and_against_pytorch_fid():
    "Closed forms on tiny Gaussians; pytorch-fid's scipy sqrtm version on random ones."
    from pytorch_fid.fid_score import calculate_frechet_distance
    # 1-d: (m1 - m2)^2 + (s1 - s2)^2; diagonal: that per axis
    assert fid.frechet_distance([0.5], [[0.25]], [-1.0], [[4.0]]) == pytest.approx(1.5 ** 2 + (0.5 - 2) ** 2, abs=1e-12)
    assert fid.frechet_distance([0, 0, 1], np.diag([1, 9, 4.0]), [1, 2, 1], np.diag([4, 1, 4.0])) == pytest.approx(1 + 4 + 1 + 4 + 0)
    # commuting (same eigenvectors) covariances: ||mu||^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))
    a, b = np.array([1.0, 2, 3, 4]), np.array([4.0, 1, 9, 1])
    assert fid.frechet_distance(np.zeros(4), q @ np.diag(a) @ q.T, np.ones(4), q @ np.diag(b) @ q.T) == \
        pytest.approx(4 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel=1e-10)
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    f2 = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 0.3
    args = (f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert fid.frechet_distance(*args) == pytest.approx(calculate_frechet_distance(*args), rel=1e-8)
    with pytest.raises(ValueError, match='do not match'): fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


class StubTokenizer(torch.nn.Module):
    "Reconstructs each frame as itself plus `shift` (clamped): known reconstructions for the rFID wiring."
    codebook_size = 4
    def __init__(self, shift=0.0):
        super().__init__(); self.shift = shift; self.anchor = torch.nn.Parameter(torch.zeros(1))   # a parameter: a device
    def forward(self, x): return (x + 2 * self.shift).clamp(-1, 1), {'indices': torch.zeros(len(x), 2, 2, dtype=torch.long)}


def random_extractor(seed=0):
    "A small random convolutional network standing in for Inception: tests the wiring, it is not a metric."
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())


def test_rfid_wiring_with_an_injected_extractor(make_frames):
    frames = make_frames(40, H, W, seed=4).frames
    features = random_extractor()
    same = ev.evaluate(StubTokenizer(0.0), frames, batch_size=16, fid_model=features)
    shifted = ev.evaluate(StubTokenizer(0.2), frames, batch_size=16, fid_model=features)
    assert same['rfid'] < 1e-6 and shifted['rfid'] > 1e3 * max(same['rfid'], 1e-9)
    # the pipeline's number is the distance between the Gaussians of the two feature sets, computed by hand
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        fx, fy = features(x).double().numpy(), features((x + 0.2).clamp(0, 1)).double().numpy()
    by_hand = fid.frechet_distance(fx.mean(0), np.cov(fx, rowvar=False), fy.mean(0), np.cov(fy, rowvar=False))
    assert shifted['rfid'] == pytest.approx(by_hand, rel=1e-4)
    assert ev.evaluate(StubTokenizer(0.2), frames, batch_size=7, fid_model=features)['rfid'] == pytest.approx(shifted['rfid'], rel=1e-6)
    assert 'rfid' not in ev.evaluate(StubTokenizer(0.2), frames)                 # the trainer's call: no rFID


def test_eval_reports_rfid_with_an_injected_extractor(runs, no_lpips, tmp_path):
    folders, _ = runs
    r = rp.run_eval(folders['nearest'], device='cpu', fid=random_extractor())
    m = r['sources']['val']
    assert m['rfid_status'] == 'ok' and m['rfid'] > 0
    assert 'rFID' in rp.eval_summary(r) and f"rFID {m['rfid']:.2f}" in rp.eval_summary(r)


# -- LPIPS graded by another network ---------------------------------------------------------------------------------
@pytest.mark.parametrize('trained, override, grades', [
    ('alex', None, 'vgg'), ('vgg', None, 'alex'), (None, None, 'alex'), ('alex', 'squeeze', 'squeeze')])
def test_lpips_is_graded_by_a_network_the_run_did_not_train_on(trained, override, grades, monkeypatch, tmp_path):
    asked = []
    def fake_build(net, device='cpu'):
        asked.append(net)
        return build_lpips(net, device, random_backbone=True)    # random backbone: no weights needed; wiring only
    monkeypatch.setattr(ev, 'build_lpips', fake_build)
    cfg = tiny_cfg(tmp_path, *([f'loss.lpips=0.1', f'loss.lpips_net={trained}'] if trained else []))
    model = build_tokenizer(cfg)
    frames = np.random.default_rng(0).integers(0, 256, size=(3, H, W, 3), dtype=np.uint8)
    r = ev.evaluate_model(model, cfg, [('frames', frames)], tmp_path / 'out', lpips_net=override, fid=False)
    m = r['sources']['frames']
    assert asked == [grades] and m['lpips_net'] == grades and m['lpips_trained_net'] == trained and m['lpips'] > 0
    assert f'LPIPS ({grades})' in rp.eval_summary(r)


def test_compared_runs_share_one_grading_network(runs, monkeypatch):
    "Runs trained on alex and on vgg: graded by squeeze, the network neither trained on."
    folders, _ = runs
    asked = []
    def unavailable(net, device='cpu'):
        asked.append(net); raise LPIPSUnavailable(f'no {net} weights here')
    monkeypatch.setattr(ev, 'build_lpips', unavailable)
    real_load = ck.load_tokenizer
    def load(path, device='cpu'):   # the 'transpose' run as if it had trained with LPIPS on vgg, the other on alex
        model, cfg, state = real_load(path, device)
        net = 'vgg' if Path(path).name == 'transpose' else 'alex'
        return model, apply_overrides(cfg, ['loss.lpips=0.1', f'loss.lpips_net={net}']), state
    monkeypatch.setattr(rp, 'load_tokenizer', load)   # where report looks it up
    s = rp.run_eval_many([folders['nearest'], folders['transpose']], device='cpu', sample_frames=2, fid=False)
    assert asked == ['squeeze'] and [row['lpips_net'] for row in s['table']] == ['squeeze', 'squeeze']
    assert [row['lpips_trained_net'] for row in s['table']] == ['alex', 'vgg']


def test_eval_on_another_game_uses_its_held_out_worlds_at_the_runs_frame_size(tmp_path):
    "'crafter' for a run trained on other frames: Crafter's held-out worlds (never its training worlds), named crafter-val."
    cfg = apply_overrides(tiny_cfg(tmp_path), ['data.crafter_train_seeds=1', 'data.crafter_val_seeds=2',
                                               'data.frames_per_episode=4', 'data.workers=1'])
    (name, frames), = ev.eval_sources(cfg, ['crafter'])
    assert name == 'crafter-val' and frames.names == ['crafter-seed-10000', 'crafter-seed-10001']
    assert frames.frames.shape[1:] == (H, W, 3) and len(frames) > 0
    assert cfg.data.source.endswith('frames.npy')          # the run's own config is untouched
