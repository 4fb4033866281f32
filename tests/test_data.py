"Integration tests of vqvae_kaggle.data: parallel extraction into the cache, reuse, and the loader on a GPU."
import hashlib, json, logging, mmap, os, tempfile, warnings
from dataclasses import replace
from pathlib import Path

for var in ('WANDB_DIR', 'MPLCONFIGDIR', 'KAGGLEHUB_CACHE', 'KAGGLE_CONFIG_DIR'):
    os.environ.setdefault(var, tempfile.mkdtemp(prefix=f'{var.lower()}-'))

import numpy as np
import pytest
import torch
from vqvae_kaggle.config import Config, DataConfig
from vqvae_kaggle.sources import cache as data_mod
from vqvae_kaggle.data import BatchLoader, load_splits
from vqvae_kaggle.sources import extract_task
from vqvae_kaggle.sources.cache import CacheError, FRAMES_FILE, FRAMES_RECORD, cached_frames, load_cache_entry


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
    # Both splits are views of the entry's one mapped file (the training worlds come first): no copy in memory.
    assert mapped_file(train2.frames) == mapped_file(val2.frames) == (entries[0] / FRAMES_FILE).resolve()
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
    assert gpu.data.is_cuda and streamed.data is None
    path = Path(tempfile.mkdtemp()) / 'frames.npy'; np.save(path, frames)
    mapped = BatchLoader(np.load(path, mmap_mode='c'), device='cuda', resident=False, **kw)   # streamed from a mapped file
    for epoch in (0, 1):
        for a, b, c, d in zip(cpu.epoch_batches(epoch), gpu.epoch_batches(epoch), streamed.epoch_batches(epoch),
                              mapped.epoch_batches(epoch), strict=True):
            assert b.is_cuda and c.is_cuda and d.is_cuda and b.dtype == torch.uint8
            assert torch.equal(a, b.cpu()) and torch.equal(a, c.cpu()) and torch.equal(a, d.cpu())
    tail = list(gpu.epoch_batches(1, start_step=3))
    full = list(streamed.epoch_batches(1))
    assert all(torch.equal(x, y) for x, y in zip(tail, full[3:])) and len(tail) == len(full) - 3


# ---------------------------------------------------------------------------------------------------------------
# The memory-mapped cache: one file per entry, mapped by every process; the loader reads batches from it in place.

def mapped_file(a):
    "The file that `a` is a view of a memory map of, else None (follows numpy's chain of bases)."
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap): return Path(a.filename)
        a = a.base
    return None


def array_cache(tmp_path, parts=3, frames=11, seed=0):
    "A cache entry of `parts` frame-array tasks of random frames; return the entry and all its frames, in memory."
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (frames, 6, 8, 3), dtype=np.uint8) for _ in range(parts)]
    for i, a in enumerate(arrays): np.save(tmp_path / f'part{i}.npy', a)
    tasks = [dict(kind='array', path=str(tmp_path / f'part{i}.npy'), width=8, height=6) for i in range(parts)]
    cached_frames('mm', {'source': 'parts'}, tasks, tmp_path / 'cache', workers=1, progress=False, extract=extract_task)
    return next((tmp_path / 'cache').iterdir()), np.concatenate(arrays)


def test_memory_mapped_cache_gives_the_same_batches(tmp_path):
    entry, in_ram = array_cache(tmp_path)
    fs, _ = load_cache_entry(entry)
    assert isinstance(fs.frames, np.memmap) and mapped_file(fs.frames) == (entry / FRAMES_FILE).resolve()
    np.testing.assert_array_equal(fs.frames, in_ram)
    for world_size in (1, 2, 3):
        for rank in range(world_size):
            kw = dict(batch_size=4, seed=3, hflip=True, rank=rank, world_size=world_size)
            old = BatchLoader(in_ram, resident=True, **kw)    # the frames held in memory, channels first: the loader as it was
            new = BatchLoader(fs.frames, **kw)
            assert new.data is None and np.shares_memory(new.host.numpy(), fs.frames)   # batches are read from the file
            for epoch in range(3):
                a, b = list(old.epoch_batches(epoch)), list(new.epoch_batches(epoch))
                assert len(a) == len(b) == new.steps_per_epoch > 0
                assert all(torch.equal(x, y) and y.is_contiguous() for x, y in zip(a, b))
                flips = new.flips(epoch)
                for idx, y in zip(new.batch_indices(epoch), b):                   # and they are the frames they should be
                    want = in_ram[idx.numpy()].copy()
                    want[flips[idx].numpy()] = want[flips[idx].numpy()][:, :, ::-1]
                    assert torch.equal(y, torch.from_numpy(want).permute(0, 3, 1, 2))
                assert all(torch.equal(x, y) for x, y in zip(new.epoch_batches(epoch, start_step=1), b[1:], strict=True))


def test_splits_of_a_mapped_cache_stay_mapped(tmp_path):
    np.save(tmp_path / 'one.npy', np.random.default_rng(1).integers(0, 256, (20, 6, 8, 3), dtype=np.uint8))
    cfg = Config(data=DataConfig(source=str(tmp_path / 'one.npy'), width=8, height=6, val_fraction=0.25,
                                 cache_dir=str(tmp_path / 'cache'), workers=1))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                   # a single episode: split into contiguous blocks, with a warning
        train, val = load_splits(cfg, progress=False)
    entry = next((tmp_path / 'cache').iterdir())
    assert (len(train), len(val)) == (15, 5)
    assert mapped_file(train.frames) == mapped_file(val.frames) == (entry / FRAMES_FILE).resolve()
    loader = BatchLoader(train.frames, 4, seed=0)
    assert loader.data is None and np.shares_memory(loader.host.numpy(), train.frames)


def test_loading_twice_maps_the_same_file_and_reads_no_shard(tmp_path, monkeypatch):
    entry, in_ram = array_cache(tmp_path)
    reads, real = [], data_mod._load_npy
    monkeypatch.setattr(data_mod, '_load_npy', lambda path, *a: reads.append(path.name) or real(path, *a))
    a, b = load_cache_entry(entry)[0], load_cache_entry(entry)[0]      # e.g. two ranks on one machine
    assert reads == [] and mapped_file(a.frames) == mapped_file(b.frames) == (entry / FRAMES_FILE).resolve()
    assert sorted(p.name for p in entry.iterdir()) == sorted([*(f'00000{i}.{x}' for i in range(3) for x in ('json', 'npy')),
                                                               FRAMES_FILE, FRAMES_RECORD, 'manifest.json', 'plan.json'])
    record = json.loads((entry / FRAMES_RECORD).read_text())
    assert record['sha256'] == hashlib.sha256((entry / FRAMES_FILE).read_bytes()).hexdigest()
    assert record['bytes'] == (entry / FRAMES_FILE).stat().st_size


def damage(path, offset, data, keep_time=False):
    "Overwrite bytes of `path` (negative `offset`: from its end), then give it back its old time or a later one."
    st = path.stat()
    with open(path, 'r+b') as f: f.seek(offset, 0 if offset >= 0 else 2); f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + (0 if keep_time else 10**9)))


def test_damaged_frames_file_is_rewritten_from_the_shards_never_served(tmp_path, caplog):
    entry, in_ram = array_cache(tmp_path)
    copy = entry / FRAMES_FILE
    def loads_right(**kw):
        fs, _ = load_cache_entry(entry, **kw)
        return isinstance(fs.frames, np.memmap) and np.array_equal(fs.frames, in_ram)
    with caplog.at_level(logging.WARNING, logger='vqvae_kaggle.data'):
        with open(copy, 'r+b') as f: f.truncate(copy.stat().st_size - 100)
        assert loads_right()                                                     # truncated
        damage(copy, -7, b'\xff' * 7); assert loads_right()                      # edited after it was written
        damage(copy, 0, b'\x93NUMPY\x09', keep_time=True); assert loads_right()  # header unreadable, size and time as recorded
        damage(copy, -7, b'\xff' * 7, keep_time=True); assert loads_right(verify=True)   # bit rot: caught by the hash
    assert sum(FRAMES_FILE in r.getMessage() for r in caplog.records) == 4
    os.utime(copy); assert loads_right()                                         # touched, unchanged: hashed, time recorded
    assert json.loads((entry / FRAMES_RECORD).read_text())['mtime_ns'] == copy.stat().st_mtime_ns
    # A damaged copy with a damaged shard behind it: an error that names the shard, never wrong frames.
    damage(copy, -7, b'\0' * 7); damage(entry / '000001.npy', -7, b'\0' * 7)
    with pytest.raises(CacheError, match='000001.npy: shard is damaged'): load_cache_entry(entry)


def test_unwritable_cache_is_read_into_memory(tmp_path, monkeypatch, caplog):
    entry, in_ram = array_cache(tmp_path)
    (entry / FRAMES_FILE).unlink()
    def read_only(*a): raise OSError(30, 'Read-only file system')
    monkeypatch.setattr(data_mod, '_write_frames_file', read_only)
    with caplog.at_level(logging.WARNING, logger='vqvae_kaggle.data'):
        fs, _ = load_cache_entry(entry)
    assert mapped_file(fs.frames) is None and np.array_equal(fs.frames, in_ram)
    assert 'Read-only file system' in caplog.text and 'holding the frames in memory' in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# Video sources through the cache: split by video, reuse, invalidation, resume, bad inputs, Kaggle handles.
import vqvae_kaggle.sources.recordings as frames_mod      # the extractors look decode_video up there
from vqvae_kaggle.sources.base import VAL_SEED0 as CRAFTER_VAL_SEED0
from vqvae_kaggle.frames import FrameError
from vqvae_kaggle.shared import write_video
from vqvae_kaggle.sources.recordings import every_kth


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


def test_minerl_actions_and_rewards_come_back_from_the_cache_aligned(tmp_path, monkeypatch):
    """A rendered.npz beside each recording: the cache keeps each kept frame's action (its step's camera yaw is its frame
    number) and the rewards up to the next kept frame, in two worker processes; adding the files makes a new entry."""
    lengths = [16, 21, 24]
    root = minerl_tree(tmp_path / 'minerl', lengths)
    cfg = video_cfg(tmp_path, root, val_fraction=0.0, workers=2)
    plain, _ = load_splits(cfg, progress=False)
    assert plain.actions is None and plain.rewards is None
    for k, n in enumerate(lengths):                              # one step per pair of frames; reward 1 per step
        np.savez(root / f'traj{k}' / 'rendered.npz', **{'action$camera': np.stack([np.zeros(n - 1), np.arange(n - 1)], 1),
                                                         'action$jump': np.arange(n - 1) % 2, 'reward': np.ones(n - 1)})
    fs, _ = load_splits(cfg, progress=False)
    assert len(entries(tmp_path)) == 2                         # the action files are part of the source's fingerprint
    assert fs.action_names == ['jump', 'camera_pitch', 'camera_yaw']
    for e, name in enumerate(fs.names):
        k = int(name[-1]); n = lengths[k]; part = fs.subset(fs.episodes == e)
        kept = every_kth(n, 10, 2)
        assert red(part) == (20 * k + kept).tolist()
        np.testing.assert_array_equal(part.actions[:, 2], np.where(kept < n - 1, kept, 0))   # the last frame has no step
        np.testing.assert_array_equal(part.rewards, [min(b, n - 1) - a for a, b in zip(kept, np.r_[kept[1:], n])])
    calls = count_decodes(monkeypatch)
    again, _ = load_splits(cfg, progress=False)
    assert calls == []                                          # reused: nothing decoded
    np.testing.assert_array_equal(again.actions, fs.actions); np.testing.assert_array_equal(again.rewards, fs.rewards)
    entry = next(p for p in (tmp_path / 'cache').iterdir() if (p / '000000.actions.npy').exists())
    manifest = json.loads((entry / 'manifest.json').read_text())
    assert all({'actions', 'rewards'} <= set(s) and 'dones' not in s for s in manifest['shards'])
    (entry / '000001.rewards.npy').write_bytes(b'\x93NUMPY damaged')
    with pytest.raises(CacheError, match='000001.rewards.npy: shard is damaged'):
        load_cache_entry(entry)
