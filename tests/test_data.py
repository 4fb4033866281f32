"Integration tests of vqvae_kaggle.data: parallel extraction into the cache, reuse, and the loader on a GPU."
import json, os, tempfile, warnings
from dataclasses import replace
from pathlib import Path

for var in ('WANDB_DIR', 'MPLCONFIGDIR', 'KAGGLEHUB_CACHE', 'KAGGLE_CONFIG_DIR'):
    os.environ.setdefault(var, tempfile.mkdtemp(prefix=f'{var.lower()}-'))

import numpy as np
import pytest
import torch
from vqvae_kaggle.config import Config, DataConfig
from vqvae_kaggle.data import BatchLoader, load_splits, load_cache_entry


def crafter_cfg(tmp_path, **kw):
    d = dict(source='crafter', crafter_train_seeds=2, crafter_val_seeds=2, frames_per_episode=5, skip_first=3, frame_gap=2,
             cache_dir=str(tmp_path / 'cache'), workers=2)
    d.update(kw)
    return Config(data=DataConfig(**d))


def test_crafter_parallel_extraction_cached_and_reused(tmp_path):
    cfg = crafter_cfg(tmp_path)
    train, val = load_splits(cfg, progress=False)
    assert train.names == ['crafter-seed-0', 'crafter-seed-1']
    assert val.names == ['crafter-seed-10000', 'crafter-seed-10001']
    assert train.frames.shape == (10, 72, 128, 3) and val.frames.shape == (10, 72, 128, 3)
    entries = [p for p in (tmp_path / 'cache').iterdir()]
    assert len(entries) == 1 and not entries[0].name.endswith('.partial')
    manifest = json.loads((entries[0] / 'manifest.json').read_text())
    assert manifest['counts'] == dict(frames=20, shards=4, skipped=0, episodes=4, splits=dict(train=10, val=10))
    # Reuse: identical frames (crafter is not deterministic, so equality proves nothing was re-rendered).
    train2, val2 = load_splits(cfg, progress=False)
    np.testing.assert_array_equal(train2.frames, train.frames)
    np.testing.assert_array_equal(val2.frames, val.frames)
    assert [p.name for p in (tmp_path / 'cache').iterdir()] == [entries[0].name]


def test_crafter_resized_config_gets_its_own_entry(tmp_path):
    small = crafter_cfg(tmp_path, width=64, height=64, crafter_train_seeds=1, crafter_val_seeds=1, workers=1)
    train, val = load_splits(small, progress=False)
    assert train.frames.shape == (5, 64, 64, 3)
    load_splits(crafter_cfg(tmp_path, crafter_train_seeds=1, crafter_val_seeds=1, workers=1), progress=False)
    assert len(list((tmp_path / 'cache').iterdir())) == 2


def test_batchloader_epochs_cover_every_frame_once_per_rank_set():
    frames = np.random.default_rng(0).integers(0, 255, (96, 4, 6, 3), dtype=np.uint8)
    ids = torch.from_numpy(frames.reshape(96, -1)[:, :8].astype(np.int64))
    for epoch in range(3):
        seen = []
        for rank in range(4):
            for b in BatchLoader(frames, 8, rank=rank, world_size=4, seed=7).epoch_batches(epoch):
                seen.append(b.permute(0, 2, 3, 1).reshape(len(b), -1)[:, :8].long())
        seen = torch.cat(seen)
        assert len(seen) == 96
        assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, ids.tolist()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_batchloader_gpu_resident_and_streamed_give_the_same_batches():
    frames = np.random.default_rng(1).integers(0, 255, (1000, 72, 128, 3), dtype=np.uint8)
    kw = dict(batch_size=64, seed=5, hflip=True)
    cpu = BatchLoader(frames, **kw)
    gpu = BatchLoader(frames, device='cuda', resident=True, **kw)
    streamed = BatchLoader(frames, device='cuda', resident=False, **kw)
    assert gpu.data.is_cuda and not streamed.data.is_cuda
    for epoch in (0, 1):
        for a, b, c in zip(cpu.epoch_batches(epoch), gpu.epoch_batches(epoch), streamed.epoch_batches(epoch)):
            assert b.is_cuda and c.is_cuda and b.dtype == torch.uint8
            assert torch.equal(a, b.cpu()) and torch.equal(a, c.cpu())
    tail = list(gpu.epoch_batches(1, start_step=3))
    full = list(streamed.epoch_batches(1))
    assert all(torch.equal(x, y) for x, y in zip(tail, full[3:])) and len(tail) == len(full) - 3


# ---------------------------------------------------------------------------------------------------------------
# Video sources through the cache: split by video, reuse, invalidation, resume, bad inputs, Kaggle handles.
import vqvae_kaggle.frames as frames_mod
from vqvae_kaggle.data import CRAFTER_VAL_SEED0, cached_frames, source_frames
from vqvae_kaggle.frames import FrameError, every_kth, write_video


def coloured(n, offset=0, w=64, h=36):
    return np.stack([np.full((h, w, 3), (offset + t, 100, 200), np.uint8) for t in range(n)])


def red(fs):
    return fs.frames[:, fs.frames.shape[1] // 2, fs.frames.shape[2] // 2, 0].astype(int).tolist()


def minerl_tree(root, lengths):
    for k, n in enumerate(lengths):
        (root / f'traj{k}').mkdir(parents=True)
        write_video(root / f'traj{k}' / 'recording.mp4', coloured(n, offset=20 * k))
    return root


def video_cfg(tmp_path, root, **kw):
    d = dict(source=str(root), width=32, height=18, skip_first=10, frame_gap=2, val_fraction=0.3,
             cache_dir=str(tmp_path / 'cache'), workers=1)
    d.update(kw)
    return Config(data=DataConfig(**d))


def entries(tmp_path):
    return sorted(p.name for p in (tmp_path / 'cache').iterdir())


def count_decodes(monkeypatch):
    calls, real = [], frames_mod.decode_video
    def counting(path, *a, **kw):
        calls.append(Path(path).parent.name); return real(path, *a, **kw)
    monkeypatch.setattr(frames_mod, 'decode_video', counting)
    return calls


def test_minerl_split_by_video_deterministic_and_counted(tmp_path, capsys):
    root = minerl_tree(tmp_path / 'minerl', [16, 18, 20, 22, 24, 26, 28, 30, 32, 34])
    cfg = video_cfg(tmp_path, root)
    train, val = load_splits(cfg)
    out = capsys.readouterr().out
    assert f'train: {len(train)} frames from 7 episodes; validation: {len(val)} frames from 3 episodes' in out
    assert 'extracting 10 of 10 tasks' in out and str(tmp_path / 'cache') in out
    assert not set(train.names) & set(val.names) and len(train.names) + len(val.names) == 10
    for fs in (train, val):
        for e, name in enumerate(fs.names):
            k = int(name[4:]); n = 16 + 2 * k
            assert red(fs.subset(fs.episodes == e)) == [20 * k + t for t in every_kth(n, 10, 2)]
    train2, val2 = load_splits(cfg, progress=False)
    assert train2.names == train.names and val2.names == val.names
    other_seed = replace(cfg, run=replace(cfg.run, seed=1))
    assert load_splits(other_seed, progress=False)[1].names != val.names   # different held-out videos ...
    assert len(entries(tmp_path)) == 1                                       # ... from the same cache entry


def test_val_source_and_parallel_workers_match_sequential(tmp_path):
    root = minerl_tree(tmp_path / 'minerl', [14, 16, 18, 20])
    held = minerl_tree(tmp_path / 'held', [15])
    seq = load_splits(video_cfg(tmp_path, root, val_source=str(held)), progress=False)
    par = load_splits(video_cfg(tmp_path, root, val_source=str(held), cache_dir=str(tmp_path / 'par'), workers=2), progress=False)
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a.frames, b.frames); assert a.names == b.names
    assert seq[1].names == ['traj0'] and len(seq[0].names) == 4


def test_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    root = minerl_tree(tmp_path / 'minerl', [16, 18, 20])
    cfg = video_cfg(tmp_path, root)
    calls = count_decodes(monkeypatch)
    first = load_splits(cfg, progress=False)
    assert len(calls) == 3
    again = load_splits(cfg, progress=False)
    assert len(calls) == 3                                                   # reused: nothing decoded
    np.testing.assert_array_equal(first[0].frames, again[0].frames)
    load_splits(video_cfg(tmp_path, root, width=16, height=16), progress=False)
    load_splits(video_cfg(tmp_path, root, frame_gap=3), progress=False)
    assert len(calls) == 9 and len(entries(tmp_path)) == 3
    write_video(root / 'traj2' / 'recording.mp4', coloured(24, offset=40))   # the data changed on disk
    changed = load_splits(cfg, progress=False)
    assert len(calls) == 12 and len(entries(tmp_path)) == 4
    assert sum(map(len, changed)) == sum(map(len, first)) + 2


def test_damaged_or_partial_entries_are_rebuilt(tmp_path, monkeypatch):
    root = minerl_tree(tmp_path / 'minerl', [16, 18, 20])
    cfg = video_cfg(tmp_path, root, val_fraction=0.0)
    good, _ = load_splits(cfg, progress=False)
    entry = tmp_path / 'cache' / entries(tmp_path)[0]
    calls = count_decodes(monkeypatch)
    (entry / '000001.npy').unlink()                                          # partial: a shard is gone
    again, _ = load_splits(cfg, progress=False)
    np.testing.assert_array_equal(again.frames, good.frames); assert len(calls) == 3
    manifest = json.loads((entry / 'manifest.json').read_text())
    manifest['counts']['frames'] += 1
    (entry / 'manifest.json').write_text(json.dumps(manifest))               # manifest that lies
    np.testing.assert_array_equal(load_splits(cfg, progress=False)[0].frames, good.frames); assert len(calls) == 6
    (entry / 'manifest.json').write_text('{"format": 1, "shards": [')       # torn manifest
    np.testing.assert_array_equal(load_splits(cfg, progress=False)[0].frames, good.frames); assert len(calls) == 9
    assert entries(tmp_path) == [entry.name]


def test_interrupted_extraction_resumes_and_never_looks_complete(tmp_path, monkeypatch):
    root = minerl_tree(tmp_path / 'minerl', [16, 18, 20, 22])
    cfg = video_cfg(tmp_path, root, val_fraction=0.0)
    real, calls = frames_mod.decode_video, []
    def dies_on_third(path, *a, **kw):
        calls.append(path)
        if len(calls) == 3: raise KeyboardInterrupt
        return real(path, *a, **kw)
    monkeypatch.setattr(frames_mod, 'decode_video', dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        load_splits(cfg, progress=False)
    names = entries(tmp_path)
    assert len(names) == 1 and names[0].endswith('.partial')                # nothing that looks finished
    assert not (tmp_path / 'cache' / names[0] / 'manifest.json').exists()
    calls.clear(); monkeypatch.setattr(frames_mod, 'decode_video', lambda p, *a, **kw: (calls.append(p), real(p, *a, **kw))[1])
    resumed, _ = load_splits(cfg, progress=False)
    assert len(calls) == 2                                                   # only the unfinished videos
    fresh, _ = load_splits(replace(cfg, data=replace(cfg.data, cache_dir=str(tmp_path / 'fresh'))), progress=False)
    np.testing.assert_array_equal(resumed.frames, fresh.frames)
    assert [n for n in entries(tmp_path) if n.endswith('.partial')] == []


def test_failed_rebuild_leaves_finished_entries_alone(tmp_path, monkeypatch):
    root = minerl_tree(tmp_path / 'minerl', [16, 18])
    cfg = video_cfg(tmp_path, root, val_fraction=0.0)
    good, _ = load_splits(cfg, progress=False)
    entry = tmp_path / 'cache' / entries(tmp_path)[0]
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    def broken(*a, **kw): raise FrameError('decoder exploded')
    monkeypatch.setattr(frames_mod, 'decode_video', broken)
    with pytest.raises(FrameError, match='decoder exploded'):
        load_splits(video_cfg(tmp_path, root, val_fraction=0.0, width=16, height=16), progress=False)
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == before
    np.testing.assert_array_equal(load_splits(cfg, progress=False)[0].frames, good.frames)


def test_bad_videos_stop_or_are_skipped_and_counted(tmp_path, capsys):
    root = minerl_tree(tmp_path / 'minerl', [16, 18, 20])
    (root / 'traj1' / 'recording.mp4').write_bytes(b'\x00' * 1000)
    (root / 'short').mkdir(); write_video(root / 'short' / 'recording.mp4', coloured(5))
    cfg = video_cfg(tmp_path, root, val_fraction=0.0)
    with pytest.raises(FrameError, match=r'short/recording.mp4: video has 5 frames, none left .*skip_bad'):
        load_splits(cfg, progress=False)
    train, _ = load_splits(replace(cfg, data=replace(cfg.data, skip_bad=True)))
    out = capsys.readouterr().out
    assert 'traj1/recording.mp4' in out and 'short/recording.mp4: video has 5 frames' in out
    assert sorted(train.names) == ['traj0', 'traj2']
    manifest = json.loads(next((tmp_path / 'cache').glob('*/manifest.json')).read_text())
    assert manifest['counts']['skipped'] == 2 and len(manifest['skipped']) == 2
    assert 'skipped' in out


def test_bad_images_skipped_individually(tmp_path):
    from PIL import Image
    root = tmp_path / 'imgs'
    for ep in ('a', 'b'):
        (root / ep).mkdir(parents=True)
        for i in range(3): Image.new('RGB', (32, 18), (i, 0, 0)).save(root / ep / f'{i}.png')
    (root / 'a' / '1.png').write_bytes(b'broken')
    cfg = video_cfg(tmp_path, root, val_fraction=0.5, skip_bad=True)
    train, val = load_splits(cfg, progress=False)
    assert sorted(len(s) for s in (train, val)) == [2, 3]
    with pytest.raises(FrameError, match='a/1.png: cannot read image'):
        load_splits(replace(cfg, data=replace(cfg.data, skip_bad=False)), progress=False)


def test_single_video_splits_into_contiguous_blocks(tmp_path):
    write_video(tmp_path / 'one.mp4', coloured(40))
    cfg = video_cfg(tmp_path, tmp_path / 'one.mp4', skip_first=0, frame_gap=1, val_fraction=0.25)
    with pytest.warns(UserWarning, match='contiguous blocks'):
        train, val = load_splits(cfg, progress=False)
    assert red(train) == list(range(30)) and red(val) == list(range(30, 40))


def test_gamefactory_through_cache_with_target_and_gaps(tmp_path, monkeypatch):
    root = tmp_path / 'gf'
    (root / 'video').mkdir(parents=True)
    for k, n in enumerate([50, 40, 30, 60]): write_video(root / 'video' / f'{k}.mp4', coloured(n, offset=60 * k))
    cfg = video_cfg(tmp_path, root, layout='gamefactory', skip_first=0, frame_gap=5, max_frames=25, val_fraction=0.25)
    train, val = load_splits(cfg, progress=False)
    assert len(train) + len(val) == 25 and (len(train.names), len(val.names)) == (3, 1)
    for fs in (train, val):
        for e in range(len(fs.names)):
            assert all(np.diff(red(fs.subset(fs.episodes == e))) >= 5)
    calls = count_decodes(monkeypatch)
    assert load_splits(cfg, progress=False)[0].names == train.names and calls == []


def test_kaggle_versioned_handle_offline(tmp_path, monkeypatch):
    from kagglehub import cache, handle as kh
    monkeypatch.setenv('KAGGLEHUB_CACHE', str(tmp_path / 'kh'))
    h = kh.parse_dataset_handle('someone/minerl-mini/versions/1')
    root = Path(cache.get_cached_path(h))
    minerl_tree(root, [16, 18, 20])
    marker = Path(cache._get_completion_marker_filepath(h)); marker.parent.mkdir(parents=True, exist_ok=True); marker.touch()
    cfg = video_cfg(tmp_path, 'kaggle:someone/minerl-mini/versions/1', val_fraction=0.0)
    train, _ = load_splits(cfg, progress=False)
    assert sorted(train.names) == ['traj0', 'traj1', 'traj2']
    with pytest.raises(FrameError, match='cannot resolve the Kaggle dataset'):
        load_splits(replace(cfg, data=replace(cfg.data, source='kaggle:someone/minerl-mini')), progress=False)
