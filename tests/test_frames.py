"Slower tests of vqvae_kaggle.frames: longer Crafter episodes."
import os, tempfile

for var in ('WANDB_DIR', 'MPLCONFIGDIR', 'KAGGLEHUB_CACHE', 'KAGGLE_CONFIG_DIR'):
    os.environ.setdefault(var, tempfile.mkdtemp(prefix=f'{var.lower()}-'))

import numpy as np
import pytest
from vqvae_kaggle.frames import FrameError
from vqvae_kaggle.sources.crafter import render_crafter, render_crafter_episode


def test_crafter_policy_explores_the_world():
    ep = render_crafter_episode(3, frames=40, skip_first=20, frame_gap=2)
    assert ep.shape == (40, 72, 128, 3) and ep.dtype == np.uint8
    # The map area (top 7 tile rows) must change often: a stuck player would repeat frames.
    views = ep[:, :56].reshape(40, -1)
    changed = (views[1:] != views[:-1]).any(1).mean()
    assert changed > 0.5, f'only {changed:.0%} of consecutive frames differ'


def test_crafter_render_resizes_and_labels_each_world():
    fs = render_crafter([4, 9, 11], frames_per_episode=2, skip_first=0, frame_gap=1, width=64, height=36, progress=False)
    assert fs.frames.shape == (6, 36, 64, 3)
    assert fs.names == ['crafter-seed-4', 'crafter-seed-9', 'crafter-seed-11']
    assert fs.episode_counts() == {n: 2 for n in fs.names}


@pytest.mark.parametrize('kw', [dict(frames=0), dict(frames=2, frame_gap=0), dict(frames=2, skip_first=-1)])
def test_crafter_rejects_bad_counts(kw):
    with pytest.raises(FrameError):
        render_crafter_episode(0, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Videos, layouts, sampling rules, Kaggle handles. Test videos are lossless (libx264rgb, crf 0) and frame t of a
# video is a flat colour whose red channel is offset + t, so the exact frames a rule kept can be read back.
import json
import warnings
from pathlib import Path

import av
from PIL import Image
from vqvae_kaggle.frames import FrameSet
from vqvae_kaggle.shared import write_video
from vqvae_kaggle.sources.readers import decode_video, video_frame_count
from vqvae_kaggle.sources.recordings import detect_layout, every_kth, gap_sample, plan_tasks, read_source, resolve_source


def coloured(n, offset=0, w=64, h=36):
    return np.stack([np.full((h, w, 3), (offset + t, 100, 200), np.uint8) for t in range(n)])


def red(fs_or_frames):
    frames = fs_or_frames.frames if isinstance(fs_or_frames, FrameSet) else fs_or_frames
    return frames[:, frames.shape[1] // 2, frames.shape[2] // 2, 0].astype(int).tolist()


def test_libx264rgb_crf0_is_lossless(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (9, 36, 64, 3), dtype=np.uint8)
    write_video(tmp_path / 'noise.mp4', frames)
    np.testing.assert_array_equal(decode_video(tmp_path / 'noise.mp4'), frames)


def test_webm_frame_count_from_packets(tmp_path):
    path = tmp_path / 'clip.webm'
    with av.open(str(path), 'w') as out:
        s = out.add_stream('libvpx-vp9', rate=10); s.width, s.height, s.pix_fmt = 64, 36, 'yuv420p'
        for f in coloured(8):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): out.mux(p)
        for p in s.encode(): out.mux(p)
    assert video_frame_count(path) == 8
    assert decode_video(path, skip_first=2, frame_gap=3, width=32, height=18).shape == (2, 18, 32, 3)


def minerl_tree(root, lengths):
    for k, n in enumerate(lengths):
        d = root / f'v{k}' / f'traj{k}'
        d.mkdir(parents=True)
        write_video(d / 'recording.mp4', coloured(n, offset=50 * k))
        (d / 'metadata.json').write_text(json.dumps({'frames': n}))
    return root


def test_minerl_rule_keeps_exact_frames(tmp_path):
    root = minerl_tree(tmp_path / 'minerl', [30, 41, 23])
    assert detect_layout(root) == 'minerl'
    fs = read_source(str(root), 32, 18, skip_first=20, frame_gap=2)
    assert fs.names == ['v0/traj0', 'v1/traj1', 'v2/traj2']
    for k, n in enumerate([30, 41, 23]):
        assert red(fs.subset(fs.episodes == k)) == [50 * k + t for t in every_kth(n, 20, 2)]


def test_minerl_max_frames_is_a_seeded_subset_of_the_rule(tmp_path):
    root = minerl_tree(tmp_path / 'minerl', [30, 41, 23])
    fs = read_source(str(root), 32, 18, skip_first=20, frame_gap=2, max_frames=7, seed=3)
    assert len(fs) == 7
    allowed = {50 * k + t for k, n in enumerate([30, 41, 23]) for t in every_kth(n, 20, 2)}
    assert set(red(fs)) <= allowed
    assert red(read_source(str(root), 32, 18, skip_first=20, frame_gap=2, max_frames=7, seed=3)) == red(fs)


def gamefactory_meta(n, keyed=False, pitch=0.0, **extra):
    "GF-Minecraft-style metadata: per frame t, ws cycling 0/1/2, ad 0, scs 0, yaw = t (so a frame's action names it), pitch as given."
    acts = [dict(ws=t % 3, ad=0, scs=0, pitch=float(pitch), yaw=float(t), **extra) for t in range(n)]
    return dict(biome='plains', actions={str(t): a for t, a in enumerate(acts)} if keyed else acts)


def test_gamefactory_rule_draws_planned_frames_with_gaps(tmp_path):
    root = tmp_path / 'gf'
    (root / 'video').mkdir(parents=True); (root / 'metadata').mkdir()
    lengths = [60, 35, 12, 48]
    for k, n in enumerate(lengths):
        write_video(root / 'video' / f'{k:03d}.mp4', coloured(n, offset=60 * k))
        (root / 'metadata' / f'{k:03d}.json').write_text(json.dumps(gamefactory_meta(n, keyed=k % 2 == 1, pitch=-k)))
    tasks = plan_tasks(root, 'gamefactory', 64, 64, skip_first=0, frame_gap=5, max_frames=20, seed=11)
    expected = gap_sample(lengths, 20, 5, seed=11)
    by_name = {t['episode']: t['indices'] for t in tasks}
    assert by_name == {f'video/{k:03d}.mp4': e.tolist() for k, e in enumerate(expected) if len(e)}
    assert all(t['annotations'].endswith(f"metadata/{Path(t['path']).stem}.json") for t in tasks)
    fs = read_source(str(root), 64, 64, layout='gamefactory', frame_gap=5, max_frames=20, seed=11)
    assert len(fs) == 20 and fs.frames.shape[1:] == (64, 64, 3)
    assert fs.action_names == ['forward', 'back', 'left', 'right', 'jump', 'sneak', 'sprint', 'camera_pitch', 'camera_yaw']
    for e, name in enumerate(fs.names):
        k = int(Path(name).stem)
        part = fs.subset(fs.episodes == e)
        got = [r - 60 * k for r in red(part)]
        assert got == by_name[name] and all(np.diff(got) >= 5)
        # the actions of exactly the drawn frames: yaw is the frame number, ws cycles none/forward/back
        assert part.actions[:, 8].tolist() == got and part.actions[:, 7].tolist() == [-k] * len(got)
        assert part.actions[:, 0].tolist() == [float(t % 3 == 1) for t in got] and part.actions[:, 1].tolist() == [float(t % 3 == 2) for t in got]
    other = read_source(str(root), 64, 64, layout='gamefactory', frame_gap=5, max_frames=20, seed=12)
    assert red(other) != red(fs)


def test_gap_sample_statistics():
    picks = gap_sample([500] * 10, 300, 5, seed=0)
    assert sum(map(len, picks)) == 300
    assert all((np.diff(p) >= 5).all() and p.max() < 500 for p in picks)
    assert max(map(len, picks)) - min(map(len, picks)) < 25      # shared roughly by capacity


def test_crop_and_resize_targets_from_a_16_9_video(tmp_path):
    frame = np.zeros((90, 160, 3), np.uint8); frame[:] = (255, 0, 0); frame[:, 35:125] = (0, 255, 0)
    write_video(tmp_path / 'wide.mp4', np.stack([frame] * 3))
    for w, h in [(64, 64), (64, 36), (128, 72)]:
        out = decode_video(tmp_path / 'wide.mp4', width=w, height=h)
        assert out.shape == (3, h, w, 3)
    square = decode_video(tmp_path / 'wide.mp4', width=64, height=64)
    assert (square[:, :, 2:-2] == (0, 255, 0)).all()          # the sides were cropped away, not squeezed in
    wide = decode_video(tmp_path / 'wide.mp4', width=64, height=36)
    assert (wide[:, :, 0] == (255, 0, 0)).all()                # same aspect: nothing cropped


def test_image_folder_recursive_formats_and_episodes(tmp_path):
    root = tmp_path / 'imgs'
    (root / 'a').mkdir(parents=True); (root / 'b' / 'c').mkdir(parents=True)
    Image.new('RGB', (32, 18), (10, 20, 30)).save(root / 'a' / '0.png')
    Image.new('RGB', (32, 18), (10, 20, 30)).save(root / 'a' / '1.jpg', quality=100)
    Image.new('L', (16, 16), 99).save(root / 'b' / 'c' / '0.webp', lossless=True)
    Image.new('RGBA', (18, 32), (1, 2, 3, 0)).save(root / 'b' / 'x.png')
    (root / 'notes.txt').write_text('not an image')
    fs = read_source(str(root), 16, 9)
    assert fs.episode_counts() == {'a': 2, 'b': 1, 'b/c': 1} and fs.frames.shape == (4, 9, 16, 3)
    pixel = {n: fs.frames[fs.episodes == e][:, 4, 8].tolist() for e, n in enumerate(fs.names)}
    assert pixel == {'a': [[10, 20, 30], [10, 20, 30]], 'b/c': [[99, 99, 99]], 'b': [[1, 2, 3]]}


def test_bad_inputs_name_the_file(tmp_path):
    root = minerl_tree(tmp_path / 'm', [30, 12])
    with pytest.raises(FrameError, match='traj1/recording.mp4: video has 12 frames, none left after skipping the first 20'):
        read_source(str(root), 32, 18, skip_first=20, frame_gap=2)
    with pytest.raises(FrameError, match='recording.mp4: video has 12 frames'):
        read_source(str(root), 32, 18, layout='gamefactory', skip_first=20, frame_gap=5, max_frames=2)
    ok = read_source(str(root), 32, 18, skip_first=20, frame_gap=2, skip_bad=True)
    assert ok.names == ['v0/traj0']
    good = (root / 'v0' / 'traj0' / 'recording.mp4').read_bytes()
    (root / 'v1' / 'traj1' / 'recording.mp4').write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(FrameError, match='traj1/recording.mp4'):
        read_source(str(root), 32, 18, skip_first=0, frame_gap=1)
    (root / 'v1' / 'traj1' / 'recording.mp4').write_bytes(b'\x00' * 4096)
    with pytest.raises(FrameError, match='traj1/recording.mp4: cannot'):
        read_source(str(root), 32, 18, skip_first=0, frame_gap=1)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FrameError, match='empty: no videos'):
        read_source(str(tmp_path / 'empty'), 32, 18)


def test_truncated_video_whose_header_survives(tmp_path):
    # A video with its index at the front (faststart) cut short: the header promises more frames than decode.
    path = tmp_path / 'fast.mp4'
    with av.open(str(path), 'w', options={'movflags': 'faststart'}) as out:
        s = out.add_stream('libx264rgb', rate=20, options={'crf': '0'}); s.width, s.height, s.pix_fmt = 64, 36, 'rgb24'
        for f in np.random.default_rng(0).integers(0, 255, (40, 36, 64, 3), dtype=np.uint8):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): out.mux(p)
        for p in s.encode(): out.mux(p)
    data = path.read_bytes(); path.write_bytes(data[: len(data) // 2])
    assert video_frame_count(path) == 40
    with pytest.raises(FrameError, match='fast.mp4'):
        decode_video(path)
    with pytest.raises(FrameError, match='fast.mp4'):
        decode_video(path, indices=[39])


def make_cached_kaggle_dataset(handle, files):
    "Place a dataset in $KAGGLEHUB_CACHE as kagglehub itself would after a download."
    from kagglehub import cache, handle as kh
    h = kh.parse_dataset_handle(handle)
    root = Path(cache.get_cached_path(h)); root.mkdir(parents=True)
    for rel, writer in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True); writer(root / rel)
    marker = Path(cache._get_completion_marker_filepath(h)); marker.parent.mkdir(parents=True, exist_ok=True); marker.touch()
    return root


def test_kaggle_handles_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('KAGGLEHUB_CACHE', str(tmp_path / 'kh'))
    root = make_cached_kaggle_dataset('someone/crafty-frames/versions/3',
                                      {'clips/a/recording.mp4': lambda p: write_video(p, coloured(25))})
    assert resolve_source('kaggle:someone/crafty-frames/versions/3') == root
    assert resolve_source('kaggle:someone/crafty-frames/versions/3:clips') == root / 'clips'
    fs = read_source('kaggle:someone/crafty-frames/versions/3:clips', 32, 18, skip_first=20, frame_gap=2)
    assert fs.names == ['a'] and red(fs) == [20, 22, 24]
    with pytest.raises(FrameError, match="clips/nope' not found in the dataset"):
        resolve_source('kaggle:someone/crafty-frames/versions/3:clips/nope')
    with pytest.raises(FrameError, match='Offline, only a versioned handle'):   # no network here or in CI
        resolve_source('kaggle:someone/crafty-frames')


def test_fast_video_scaling_matches_pil_box_filter(tmp_path):
    frames = render_crafter_episode(1, 4, skip_first=0, frame_gap=1)         # sharp pixel-art edges
    write_video(tmp_path / 'c.mp4', frames)
    from vqvae_kaggle.frames import preprocess
    for w, h in [(64, 36), (32, 18), (96, 54), (64, 64), (128, 72)]:
        fast = decode_video(tmp_path / 'c.mp4', width=w, height=h).astype(int)
        ref = np.stack([preprocess(f, w, h) for f in frames]).astype(int)
        assert np.abs(fast - ref).max() <= 1, (w, h)                          # rounding only


# ---------------------------------------------------------------------------------------------------------------
# What was done between frames: Crafter's recorded steps, MineRL's rendered.npz and GameFactory's JSON actions, kept
# aligned with the frames through the skip, the stride and random draws.
import itertools
from vqvae_kaggle.frames import gap_totals
from vqvae_kaggle.sources.crafter import crafter_actions, crafter_frame_steps
from vqvae_kaggle.sources.annotations import read_gamefactory_steps, read_minerl_steps


def test_crafter_records_what_happened_between_kept_frames():
    """Per kept frame: how often each action was taken up to the next kept frame, the rewards summed, the deaths OR-ed.
    (Replaying the recorded actions does not reproduce the frames: Crafter 1.8.3 moves its creatures in set order, so
    the folding is checked against the per-step record of the same render instead.)"""
    import crafter
    skip_first, frame_gap = 4, 3
    for seed in (3, 0, 1, 2, 5):                                # worlds whose player dies within ~400 steps, most runs
        frames, st = render_crafter_episode(seed, 130, skip_first, frame_gap, with_steps=True)
        if st['dones'].any(): break
    assert st['dones'].any(), 'no death in any world tried: the done flag is untested'
    kept, T = st['kept'], len(st['actions'])
    assert frames.shape == (130, 72, 128, 3) and len(kept) == 130 and kept[-1] == T       # no step after the last frame
    np.testing.assert_array_equal(st['actions'], list(itertools.islice(crafter_actions(np.random.default_rng(seed)), T)))
    rows = crafter_frame_steps(st)
    assert rows['action_names'] == list(crafter.constants.actions)
    spans = list(zip(kept, np.r_[kept[1:], T]))
    for k, (a, b) in enumerate(spans):
        np.testing.assert_array_equal(rows['actions'][k], np.bincount(st['actions'][a:b], minlength=len(rows['action_names'])))
        assert rows['rewards'][k] == pytest.approx(st['rewards'][a:b].sum(), abs=1e-5)
        assert rows['dones'][k] == st['dones'][a:b].any()
        if st['dones'][a:b].any():                              # a death: the next frame is the new life's, after its spawn
            assert b - a == int(np.flatnonzero(st['dones'][a:b])[0]) + 1 + skip_first
        elif k < len(spans) - 1: assert b - a == frame_gap
    assert rows['actions'][-1].sum() == 0 and rows['actions'][:-1].sum(1).min() >= 1
    fs = render_crafter([seed], 6, skip_first, frame_gap, progress=False)
    assert fs.actions.shape == (6, 17) and fs.rewards.shape == (6,) and fs.dones.dtype == bool


def minerl_tree_with_actions(root, lengths, rows=None):
    """MineRL trajectories whose rendered.npz says which frame each step starts from: camera yaw = video frame of the step,
    `place` cycles through string values, reward = 10 x video + frame (so sums over gaps can be checked)."""
    minerl_tree(root, lengths)
    for k, n in enumerate(lengths):
        T = (n - 1) if rows is None else rows[k]
        frame = np.arange(T) + max(0, n - 1 - T)                # MineRL's alignment: the last step ends at the last frame
        places = np.array(['none', 'dirt', 'stone'])[frame % 3]
        np.savez(root / f'v{k}' / f'traj{k}' / 'rendered.npz', **{
            'action$forward': (frame % 2).astype(np.int64), 'action$camera': np.stack([np.zeros(T), frame], 1).astype(np.float32),
            'action$place': places, 'reward': (10 * k + frame).astype(np.float64), 'observation$inventory$dirt': np.zeros(T)})
    return root


def expected_minerl(k, n, T, kept):
    "(camera yaw, place, summed reward) `minerl_tree_with_actions` gives the frames `kept` of trajectory k (n frames, T steps)."
    first = max(0, n - 1 - T)                                   # frames before `first` and from first + T on have no step
    has_step = (kept >= first) & (kept < first + T)
    place_index = {v: i for i, v in enumerate(sorted(['none', 'dirt', 'stone', 'cobblestone', 'crafting_table', 'furnace', 'torch']))}
    places = [place_index[['none', 'dirt', 'stone'][t % 3] if s else 'none'] for t, s in zip(kept, has_step)]
    per_frame = np.array([10 * k + t if first <= t < first + T else 0 for t in range(n)], np.float64)
    rewards = [per_frame[a:b].sum() for a, b in zip(kept, np.r_[kept[1:], n])]          # up to the next kept frame
    return np.where(has_step, kept, 0), places, rewards


def test_minerl_actions_follow_the_frames_through_skip_and_gap(tmp_path):
    lengths, rows = [30, 41, 23], [29, 41, 20]                  # V - 1 steps, V steps, and 2 frames before the first step
    root = minerl_tree_with_actions(tmp_path / 'minerl', lengths, rows)
    fs = read_source(str(root), 32, 18, skip_first=3, frame_gap=4)
    assert fs.action_names == ['forward', 'camera_pitch', 'camera_yaw', 'place'] and fs.dones is None   # MineRL has no done flag
    for k, (n, T) in enumerate(zip(lengths, rows)):
        part, kept = fs.subset(fs.episodes == k), every_kth(n, 3, 4)
        assert red(part) == (50 * k + kept).tolist()
        yaw, places, rewards = expected_minerl(k, n, T, kept)
        np.testing.assert_array_equal(part.actions[:, 2], yaw)                 # each kept frame's own step
        np.testing.assert_array_equal(part.actions[:, 3], places)
        np.testing.assert_allclose(part.rewards, rewards)                       # summed over the gap after it
    sub = read_source(str(root), 32, 18, skip_first=3, frame_gap=4, max_frames=7, seed=1)   # a random subset of those frames
    assert len(sub) == 7
    for e, name in enumerate(sub.names):
        k = int(name[1]); part = sub.subset(sub.episodes == e)
        kept = np.array(red(part)) - 50 * k
        yaw, _, rewards = expected_minerl(k, lengths[k], rows[k], kept)
        np.testing.assert_array_equal(part.actions[:, 2], yaw); np.testing.assert_allclose(part.rewards, rewards)


def test_minerl_annotations_that_do_not_fit_name_the_file(tmp_path):
    root = minerl_tree_with_actions(tmp_path / 'minerl', [30, 25], rows=[29, 26])      # 26 steps for 25 frames
    with pytest.raises(FrameError, match=r'traj1/rendered.npz: 26 steps for a video of 25 frames'):
        read_source(str(root), 32, 18, skip_first=20, frame_gap=2)
    assert read_source(str(root), 32, 18, skip_first=20, frame_gap=2, skip_bad=True).names == ['v0/traj0']
    np.savez(root / 'v1' / 'traj1' / 'rendered.npz', **{'action$forward': np.ones(24), 'reward': np.ones(23)})
    with pytest.raises(FrameError, match=r"traj1/rendered.npz: its arrays differ in length \({'action\$forward': 24, 'reward': 23}\)"):
        read_source(str(root), 32, 18, skip_first=20, frame_gap=2)
    np.savez(root / 'v1' / 'traj1' / 'rendered.npz', **{'action$place': np.array(['lava'] * 24)})
    with pytest.raises(FrameError, match=r"traj1/rendered.npz: action\$place holds \['lava'\]"):
        read_source(str(root), 32, 18, skip_first=20, frame_gap=2)
    # keys that are not numbers (and not a known enum), and pickled object arrays, are skipped and reported, never guessed
    np.savez(root / 'v1' / 'traj1' / 'rendered.npz', **{'action_forward': np.ones(24), 'action_chat': np.array(['hi'] * 24),
                                                         'action_blob': np.array([{}] * 24, dtype=object)})
    with pytest.warns(UserWarning, match=r"not read: \['action_blob', 'action_chat'\]"):
        st = read_minerl_steps(root / 'v1' / 'traj1' / 'rendered.npz', 25)
    assert st['action_names'] == ['forward'] and st['rewards'] is None and st['actions'][:, 0].tolist() == [1] * 24 + [0]


def test_gamefactory_annotations_are_checked(tmp_path):
    path = tmp_path / 'clip.json'
    def write(**meta): path.write_text(json.dumps(meta))
    write(**gamefactory_meta(6, pos=[0, 64, 0]))
    with pytest.warns(UserWarning, match=r"not read: \['pos'\]"):
        st = read_gamefactory_steps(path, 6)
    assert st['actions'][:, -1].tolist() == [0, 1, 2, 3, 4, 5]
    write(actions=[dict(ws=0, ad=1, scs=2, pitch_delta=1.5, yaw_delta=-2.0)] * 6)                     # the older names
    st = read_gamefactory_steps(path, 6)
    assert st['action_names'] == ['forward', 'back', 'left', 'right', 'jump', 'sneak', 'sprint', 'camera_pitch', 'camera_yaw']
    assert st['actions'][0].tolist() == [0, 0, 1, 0, 0, 1, 0, 1.5, -2.0]
    for meta, n_frames, message in [
            (dict(actions=[dict(ws=1, scs=4)]), 1, r'clip.json: frame 0: scs=4, expected 0 \(none\) or 1 \(jump\), 2 \(sneak\), 3 \(sprint\)'),
            (dict(actions=[dict(ws=1), dict(ad=1)]), 2, r"clip.json: action entry 1 has the keys \['ad'\], entry 0 has \['ws'\]"),
            (dict(actions=[dict(ws=1), dict(ws='fast')]), 2, r"clip.json: 'ws' must be a finite number"),
            (dict(actions={'0': dict(ws=1), '2': dict(ws=1)}), 2, r'clip.json: "actions" must be keyed 0..1 without gaps'),
            (dict(actions=[dict(ws=1)] * 3), 1, r'clip.json: 3 action entries for a video of 1 frames')]:
        write(**meta)
        with pytest.raises(FrameError, match=message):
            read_gamefactory_steps(path, n_frames)
    path.write_text('{not json')
    with pytest.raises(FrameError, match='clip.json: cannot read the GameFactory metadata'):
        read_gamefactory_steps(path, 1)


def test_gap_totals_matches_a_loop():
    rng = np.random.default_rng(0)
    steps = rng.random((50, 3))
    for _ in range(20):
        kept = np.sort(rng.choice(51, size=rng.integers(1, 10), replace=False))
        end = int(rng.integers(kept[-1], 51))
        bounds = np.r_[kept, end]
        loop = np.stack([steps[a:b].sum(0) for a, b in zip(bounds[:-1], bounds[1:])])
        np.testing.assert_allclose(gap_totals(steps, kept, end), loop)
