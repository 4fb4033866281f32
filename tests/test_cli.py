"""`vqvae-kaggle train` and `eval` from the command line, on every kind of frame source, and its errors."""
import json, re
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from vqvae_kaggle.cli import main
from vqvae_kaggle.shared import write_video

TINY = ['model.channels=8,16', 'model.res_blocks=0', 'model.embed_dim=8', 'quantizer.codebook_size=16',
        'quantizer.lookup_dim=4', 'data.width=32', 'data.height=16', 'optim.batch_size=4', 'optim.warmup_steps=1',
        'run.wandb=disabled', 'run.val_frames=4', 'run.sample_frames=2', 'run.max_steps=3', 'data.workers=1',
        'data.val_fraction=0.34', 'data.skip_first=2', 'data.frame_gap=2']

def clips(n_videos, length, seed=0):
    "Blocky moving frames, 64x36, one clip per video."
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n_videos):
        base = rng.integers(0, 256, size=(5, 9, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)[:36, :64]
        out.append(np.stack([np.roll(base, t, axis=1) for t in range(length)]))
    return out

def make_source(kind, root: Path) -> str:
    if kind == 'npz':
        frames = np.concatenate(clips(3, 12))
        np.savez(root / 'frames.npz', frames=frames, episodes=np.repeat(np.arange(3), 12))
        return str(root / 'frames.npz')
    if kind == 'videos':
        (root / 'videos').mkdir()
        for k, c in enumerate(clips(3, 24)): write_video(root / 'videos' / f'{k}.mp4', c)
        return str(root / 'videos')
    if kind == 'images':
        for k, c in enumerate(clips(3, 12)):
            (root / 'images' / f'ep{k}').mkdir(parents=True)
            for i, f in enumerate(c): Image.fromarray(f).save(root / 'images' / f'ep{k}' / f'{i:03d}.png')
        return str(root / 'images')
    if kind == 'minerl':
        for k, c in enumerate(clips(3, 24)):
            (root / 'minerl' / f'traj{k}').mkdir(parents=True)
            write_video(root / 'minerl' / f'traj{k}' / 'recording.mp4', c)
        return str(root / 'minerl')
    if kind == 'gamefactory':
        (root / 'gf' / 'video').mkdir(parents=True)
        for k, c in enumerate(clips(3, 40)): write_video(root / 'gf' / 'video' / f'{k:03d}.mp4', c)
        return str(root / 'gf')
    raise ValueError(kind)

@pytest.mark.parametrize('kind', ['npz', 'videos', 'images', 'minerl', 'gamefactory'])
def test_train_then_eval_on_each_source(kind, tmp_path, capsys):
    src = make_source(kind, tmp_path)
    extra = ['--set=data.max_frames=30'] if kind == 'gamefactory' else []
    sets = [f'--set={s}' for s in TINY + [f'data.cache_dir={tmp_path / "cache"}']]
    assert main(['train', '--data', src, '--out', str(tmp_path / 'run'), '--no-progress', *sets, *extra]) == 0
    out = capsys.readouterr().out
    assert re.search(r'done \(max_steps\): \d+ epochs, 3 steps in', out), out[-500:]   # the epoch count depends on the source
    assert list((tmp_path / 'run' / 'checkpoints').glob('ckpt-*.pt'))
    assert main(['eval', '--checkpoint', str(tmp_path / 'run'), '--out', str(tmp_path / 'eval')]) == 0
    r = json.loads((tmp_path / 'eval' / 'eval.json').read_text())
    m = r['sources']['val']
    assert m['frames'] > 0 and 0 < m['usage'] <= 1 and np.isfinite(m['psnr'])

@pytest.mark.parametrize('args, message', [
    (['train', '--data', '/nonexistent/frames.npz'], '/nonexistent/frames.npz'),
    (['train', '--set', 'model.upsample=bilinear'], "model.upsample = 'bilinear' is not allowed: one of 'nearest', 'transpose'"),
    (['train', '--config', '/nonexistent.json'], 'config file not found: /nonexistent.json'),
    (['eval', '--checkpoint', '/nonexistent/run'], 'no checkpoint at /nonexistent/run'),
])
def test_bad_arguments_get_one_clear_line(args, message, tmp_path, capsys):
    assert main(args + (['--out', str(tmp_path / 'r')] if args[0] == 'train' else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err

def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    "A folder with no frames: the error names it and says what was looked for (not merely the folder's own name, 'empty')."
    (tmp_path / 'empty').mkdir()
    assert main(['train', '--data', str(tmp_path / 'empty'), '--out', str(tmp_path / 'r'),
                 f'--set=data.cache_dir={tmp_path / "cache"}']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {tmp_path / "empty"}: no videos (.mp4') and 'or images (.png' in err, err
    assert not (tmp_path / 'r' / 'checkpoints').exists()

def test_tokenize_writes_a_token_folder_that_decodes_like_the_model(tmp_path, capsys):
    "A trained checkpoint whose training skipped and strode: tokenize still takes every frame, in order; decode gives the model's reconstructions."
    import torch
    from vqvae_kaggle.checkpoint import load_tokenizer
    from vqvae_kaggle.evaluate import reconstruct
    from vqvae_kaggle.sources import parse_source
    src = make_source('npz', tmp_path)
    sets = [f'--set={s}' for s in TINY + [f'data.cache_dir={tmp_path / "cache"}']]
    assert main(['train', '--data', src, '--out', str(tmp_path / 'run'), '--no-progress', *sets]) == 0
    tok = tmp_path / 'tokens'
    assert main(['tokenize', '--checkpoint', str(tmp_path / 'run'), '--data', src, '--out', str(tok), '--chunk-frames', '10',
                 '--batch-size', '4', '--no-progress', '--hysteresis', '0']) == 0   # plain codes: decoded below = the model's reconstruction
    codes, meta = np.load(tok / 'codes.npy'), json.loads((tok / 'meta.json').read_text())
    assert codes.shape == (36, 8, 16) and codes.dtype == np.uint8 and meta['codebook_size'] == 16
    assert (meta['sampling']['skip_first'], meta['sampling']['frame_gap']) == (0, 1)     # not the training's 2 and 2
    assert (np.load(tok / 'episode_starts.npy') == [0, 12, 24]).all() and (np.load(tok / 'frame_index.npy') == np.tile(np.arange(12), 3)).all()
    assert main(['decode', '--tokens', str(tok), '--batch-size', '4', '--no-progress']) == 0
    model, cfg, _ = load_tokenizer(tmp_path / 'run')
    fs, _ = parse_source(src).frames(cfg.data, progress=False)   # the 64x36 frames as the model sees them: cropped and resized to 32x16
    x = torch.from_numpy(fs.frames[:4]).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(np.load(tok / 'decoded.npy')[:4], (reconstruct(model, x)[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())

def test_eval_lpips_net_and_no_fid_flags(tmp_path, capsys, monkeypatch):
    "--lpips-net picks the grading network (recorded even when its weights are missing, as here); --no-fid skips rFID."
    import urllib.error
    from vqvae_kaggle.checkpoint import save_checkpoint
    from vqvae_kaggle.config import apply_overrides, config_to_dict
    from vqvae_kaggle.presets import get_preset
    from vqvae_kaggle.model import build_tokenizer
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty-torch-home'))
    monkeypatch.setattr('torchvision.models._api.load_state_dict_from_url',
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError('no internet')))
    cfg = apply_overrides(get_preset('cpu'), TINY + ['loss.lpips=0.1', 'loss.lpips_net=alex'])   # as if trained on alex
    model = build_tokenizer(cfg)
    save_checkpoint(tmp_path / 'run' / 'checkpoints', {'model': model.state_dict(), 'config': config_to_dict(cfg),
                                                       'step': 1, 'epoch': 0}, step=1, epoch=0)
    np.save(tmp_path / 'frames.npy', np.concatenate(clips(1, 4))[:, :16, :32])
    for extra, net, rfid_status in (([], 'vgg', 'unavailable: '), (['--lpips-net', 'squeeze', '--no-fid'], 'squeeze', 'not requested')):
        assert main(['eval', '--checkpoint', str(tmp_path / 'run'), '--data', str(tmp_path / 'frames.npy'),
                     '--out', str(tmp_path / 'eval'), '--device', 'cpu', *extra]) == 0
        m = json.loads((tmp_path / 'eval' / 'eval.json').read_text())['sources']['frames']
        assert (m['lpips'], m['lpips_net'], m['lpips_trained_net']) == (None, net, 'alex')
        assert m['lpips_status'].startswith('unavailable: ') and m['rfid'] is None and m['rfid_status'].startswith(rfid_status)
        assert f'LPIPS ({net}) n/a' in capsys.readouterr().out
