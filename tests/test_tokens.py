"""Token folders for a world model: decode(tokenize(x)) is the model's reconstruction, codes, frame indices and actions stay
aligned across episode and chunk boundaries, memory stays bounded by the chunk, an interrupted run resumes to identical
files, rendered sources keep their timeline, and the command line round trip."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np, pytest, torch

from vqvae_kaggle import tokens as tk
from vqvae_kaggle import checkpoint as ck
from vqvae_kaggle.config import apply_overrides, config_to_dict
from vqvae_kaggle.presets import get_preset
from vqvae_kaggle.model import build_tokenizer
from vqvae_kaggle.checkpoint import save_checkpoint
from vqvae_kaggle.checkpoint import load_tokenizer
from vqvae_kaggle.evaluate import reconstruct
from vqvae_kaggle.sources.readers import video_frame_count
from vqvae_kaggle.cli import main

TINY = ['model.channels=8,16', 'model.res_blocks=0', 'model.embed_dim=8', 'quantizer.codebook_size=32', 'quantizer.lookup_dim=4',
        'data.workers=1']


pytestmark = pytest.mark.usefixtures('one_thread')   # conftest: these tests compare bits


def make_checkpoint(folder: Path, W: int = 32, H: int = 16, *extra) -> Path:
    "An untrained tiny tokenizer saved as the trainer saves checkpoints (the plumbing does not care about training)."
    cfg = apply_overrides(get_preset('cpu'), TINY + [f'data.width={W}', f'data.height={H}', f'data.cache_dir={folder / "cache"}', *extra])
    torch.manual_seed(0)
    save_checkpoint(folder / 'checkpoints', dict(model=build_tokenizer(cfg).state_dict(), config=config_to_dict(cfg), step=0, epoch=0), 0, 0)
    return folder


def episodes_npz(path: Path, lengths, W: int = 32, H: int = 16, seed: int = 0, interleave: bool = False):
    """A frame array of blocky frames, one episode per length, written as .npz with `episodes`, `actions` (columns:
    episode id, position in the episode, a random value), `rewards` (100 x episode + position) and random `dones`;
    episodes interleaved row by row if asked."""
    rng = np.random.default_rng(seed)
    eps = np.concatenate([np.full(n, e) for e, n in enumerate(lengths)])
    if interleave: eps = rng.permutation(eps)                        # rows of the episodes shuffled together ...
    t = np.zeros(len(eps), np.int64)
    for e, n in enumerate(lengths): t[eps == e] = np.arange(n)       # ... each episode's rows still in time order
    frames = rng.integers(0, 256, (len(eps), H // 4, W // 4, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    actions = np.stack([eps, t, rng.random(len(eps))], 1).astype(np.float32)
    rewards, dones = (100 * eps + t).astype(np.float32), rng.random(len(eps)) < 0.15   # a reward that names its frame
    np.savez(path, frames=frames, episodes=eps, actions=actions, action_names=['episode', 't', 'noise'], rewards=rewards, dones=dones)
    return frames, eps, actions


def episode_order(eps: np.ndarray) -> np.ndarray:
    "Episode labels in the order of their first frame (the order the frame cache lists episodes in)."
    labels, first = np.unique(eps, return_index=True)
    return labels[np.argsort(first)]

def expected_rows(eps: np.ndarray, skip_first: int = 0, frame_gap: int = 1) -> np.ndarray:
    "Source rows in output order, worked out independently of `frame_order`: each episode's rows in time, every gap-th after the skip."
    return np.concatenate([np.flatnonzero(eps == e)[skip_first::frame_gap] for e in episode_order(eps)])


def expected_over_gaps(values: np.ndarray, eps: np.ndarray, skip_first: int = 0, frame_gap: int = 1, how=np.sum) -> np.ndarray:
    "Per output row: `values` of the source rows from that row up to its episode's next kept row (or end), reduced by `how`."
    out = []
    for e in episode_order(eps):
        rows = np.flatnonzero(eps == e)
        kept = np.arange(skip_first, len(rows), frame_gap)
        out += [how(values[rows[a:b]]) for a, b in zip(kept, np.r_[kept[1:], len(rows)])]
    return np.array(out)


def read_folder(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_decode_of_tokenize_is_the_models_reconstruction(tmp_path):
    run = make_checkpoint(tmp_path / 'run')
    frames, _, _ = episodes_npz(tmp_path / 'src.npz', [13, 7, 20])
    tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'tok', chunk_frames=8, batch_size=4, device='cpu', progress=False,
                hysteresis=0)   # plain nearest codes: the model's own
    r = tk.decode(tmp_path / 'tok', tmp_path / 'dec.npy', batch_size=4, device='cpu', progress=False)
    model, _, _ = load_tokenizer(run)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    recon, idx = zip(*[reconstruct(model, x[i:i + 4]) for i in range(0, len(x), 4)])   # the model's own forward pass, same batches
    recon = (torch.cat(recon) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.load(tmp_path / 'tok' / 'codes.npy'), torch.cat(idx).numpy())
    np.testing.assert_array_equal(np.load(r['frames']), recon)


@pytest.mark.parametrize('skip_first, frame_gap, interleave', [(0, 1, False), (0, 1, True), (2, 3, True)])
def test_codes_indices_and_actions_stay_aligned_across_episode_and_chunk_boundaries(tmp_path, skip_first, frame_gap, interleave):
    run = make_checkpoint(tmp_path / 'run')
    lengths, chunk = [11, 5, 17, 9], 4                               # chunks smaller than an episode, dividing none of them
    frames, eps, actions = episodes_npz(tmp_path / 'src.npz', lengths, interleave=interleave)
    s = tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'tok', skip_first, frame_gap, chunk_frames=chunk, batch_size=1,
                    device='cpu', progress=False, hysteresis=0)   # plain codes, compared with encode_chunk's below
    t = tk.load_tokens(tmp_path / 'tok')
    rows = expected_rows(eps, skip_first, frame_gap)
    kept = [len(range(skip_first, lengths[e], frame_gap)) for e in episode_order(eps)]
    assert s['chunks'] == -(-len(rows) // chunk) > 1 and len(t['codes']) == len(rows)
    np.testing.assert_array_equal(t['episode_starts'], np.r_[0, np.cumsum(kept)[:-1]])
    assert any(b % chunk for b in t['episode_starts'][1:])             # some episode boundary falls inside a chunk
    np.testing.assert_array_equal(t['actions'], actions[rows])         # each row's own action ...
    np.testing.assert_array_equal(t['frame_index'], actions[rows, 1])  # ... its position in its episode ...
    episode_of_row = np.searchsorted(t['episode_starts'], np.arange(len(rows)), side='right') - 1
    np.testing.assert_array_equal(episode_order(eps)[episode_of_row], actions[rows, 0])   # ... its episode ...
    model, _, _ = load_tokenizer(run)
    np.testing.assert_array_equal(t['codes'], tk.encode_chunk(model, frames[rows], 1))   # ... and its frame's codes
    with np.load(tmp_path / 'src.npz') as z: rewards, dones = z['rewards'], z['dones']
    np.testing.assert_array_equal(t['rewards'], expected_over_gaps(rewards, eps, skip_first, frame_gap))      # rewards summed and ...
    np.testing.assert_array_equal(t['dones'], expected_over_gaps(dones, eps, skip_first, frame_gap, np.any))  # ... dones OR-ed over gaps
    if frame_gap == 1 and skip_first == 0: np.testing.assert_array_equal(t['rewards'], rewards[rows])      # no gap: each row's own
    assert t['frame_index'][0] == skip_first and (np.diff(t['frame_index'])[np.diff(episode_of_row) == 0] == frame_gap).all()
    m = t['meta']
    assert (m['sampling']['skip_first'], m['sampling']['frame_gap'], m['episodes'], m['actions']['names']) == \
           (skip_first, frame_gap, 4, ['episode', 't', 'noise'])
    assert (m['rewards']['file'], m['dones']['file']) == ('rewards.npy', 'dones.npy') and 'summed' in m['rewards']['over_gap']
    assert m['source']['fingerprint']['frames_sha256'] and m['tokenizer']['sha256'] == tk.sha256_file(m['tokenizer']['checkpoint'])


# The peak is the process's own high-water mark (VmHWM): getrusage's ru_maxrss would not do, because Linux carries the
# peak of the parent (pytest, which just wrote the frames) over into a child it forks and execs. Measured against a
# baseline in the same process: a first tokenize run (of other frames) loads the modules, thread pools and allocator
# arenas any run needs, then the peak is reset (clear_refs 5) and the measured run's peak is taken from there, so what
# is compared is what the frames themselves keep resident, not what a first call happens to load.
MEASURE = textwrap.dedent('''
    import json, re, sys
    import torch
    torch.set_num_threads(1)
    from vqvae_kaggle import tokens as tk
    def status(key): return int(re.search(rf'^{key}:\\s+(\\d+) kB', open('/proc/self/status').read(), re.M).group(1)) * 1024
    run, source, out, chunk, how, warm = sys.argv[1:7]
    if how == 'keep-pages': tk.release_pages = lambda *a: None      # the control: read pages stay resident
    tk.tokenize(run, warm, out + '-warm-up', chunk_frames=int(chunk), batch_size=16, device='cpu', progress=False)
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')   # VmHWM restarts from the resident set now
        reset = True
    except OSError: reset = False
    before = status('VmRSS')
    tk.tokenize(run, source, out, chunk_frames=int(chunk), batch_size=16, device='cpu', progress=False)
    print(json.dumps(dict(growth=status('VmHWM') - before, reset=reset)))
''')


@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads the resident set from /proc')
def test_peak_memory_stays_bounded_by_the_chunk(tmp_path):
    """Peak resident memory of a tokenize run over 2x and 8x the chunk size of frames: the extra frames must not stay
    resident. (2x, not 1x: from the second chunk on the allocator holds one chunk's buffer more, once, however many follow.)"""
    W, H, chunk = 128, 72, 256                                       # 27 KiB a frame, 7 MiB a chunk
    run = make_checkpoint(tmp_path / 'run', W, H)
    cfg = load_tokenizer(run)[1]
    growth, sizes = {}, {}
    def frames_file(name, n, seed):
        frames = np.random.default_rng(seed).integers(0, 256, (n, H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
        np.save(tmp_path / name, frames)
        tk.open_source(cfg, str(tmp_path / name), progress=False)   # the frame cache is built here, not in the measured run
        return frames.nbytes
    frames_file('warm.npy', chunk, 0)
    def measure(k, how='release'):
        p = subprocess.run([sys.executable, '-c', MEASURE, str(run), str(tmp_path / f'x{k}.npy'), str(tmp_path / f'tok{k}-{how}'),
                            str(chunk), how, str(tmp_path / 'warm.npy')], capture_output=True, text=True, timeout=600,
                           # a fixed mmap threshold: glibc otherwise raises it after a freed chunk buffer and keeps later
                           # ones in its heap, slack that varied from run to run (2-24 MiB) and blurred the measurement
                           env={**os.environ, 'MALLOC_MMAP_THRESHOLD_': str(1 << 20)})
        assert p.returncode == 0, p.stderr
        assert len(np.load(tmp_path / f'tok{k}-{how}' / 'codes.npy', mmap_mode='r')) == k * chunk
        return json.loads(p.stdout.strip().splitlines()[-1])['growth']
    for k in (2, 8):
        sizes[k] = frames_file(f'x{k}.npy', k * chunk, k)
        growth[k] = measure(k)
    extra, more = growth[8] - growth[2], sizes[8] - sizes[2]
    print(f'peak growth: {growth[2] / 2**20:.1f} MiB for {sizes[2] / 2**20:.0f} MiB of frames, {growth[8] / 2**20:.1f} MiB for {sizes[8] / 2**20:.0f} MiB')
    # frames left resident would add all 40 MiB (the control below measures 50-55); the allocator's slack is up to two
    # chunk buffers (7 MiB each: 2-7 MiB measured, 11 MiB once on a loaded machine), so half of it separates the two
    assert extra < 0.5 * more, f'8x the frames raised the peak by {extra / 2**20:.1f} MiB more than 2x ({more / 2**20:.0f} MiB more frames)'
    kept = measure(8, 'keep-pages') - growth[2]     # the measurement can see it: pages left mapped add up with the frames
    print(f'with the pages kept: {kept / 2**20:.1f} MiB more for 8x than 2x')
    assert kept > 0.8 * more, f'with the pages kept, 8x raised the peak by only {kept / 2**20:.1f} MiB'


KILLER = textwrap.dedent('''
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from vqvae_kaggle import tokens as tk
    real, seen = tk.encode_chunk, []
    def dying(model, frames, *a, **k):
        if len(frames) > 1: seen.append(1)
        if len(seen) > int(sys.argv[4]): os.kill(os.getpid(), signal.SIGKILL)   # no cleanup of any kind, as a power cut
        return real(model, frames, *a, **k)
    tk.encode_chunk = dying
    tk.tokenize(sys.argv[1], sys.argv[2], sys.argv[3], chunk_frames=6, batch_size=4, device='cpu', progress=False, hysteresis=0)
''')


@pytest.mark.parametrize('how', ['exception', 'kill'])
def test_interrupted_tokenize_resumes_to_identical_files(tmp_path, monkeypatch, how):
    run = make_checkpoint(tmp_path / 'run')
    episodes_npz(tmp_path / 'src.npz', [13, 7, 20])                  # 40 frames: 7 chunks of 6
    args = dict(chunk_frames=6, batch_size=4, device='cpu', progress=False, hysteresis=0)   # the fault is injected into encode_chunk
    tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'whole', **args)
    done_before = 3
    if how == 'exception':
        real, seen = tk.encode_chunk, []
        def failing(model, frames, *a, **k):
            if len(frames) > 1: seen.append(1)                       # not the one-frame probe of the code grid
            if len(seen) > done_before: raise RuntimeError('interrupted')
            return real(model, frames, *a, **k)
        monkeypatch.setattr(tk, 'encode_chunk', failing)
        with pytest.raises(RuntimeError, match='interrupted'): tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'part', **args)
        monkeypatch.setattr(tk, 'encode_chunk', real)
    else:
        p = subprocess.run([sys.executable, '-c', KILLER, str(run), str(tmp_path / 'src.npz'), str(tmp_path / 'part'), str(done_before)],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == -9, p.stderr
    assert json.loads((tmp_path / 'part' / 'progress.json').read_text())['chunks_done'] == done_before
    assert not (tmp_path / 'part' / 'meta.json').exists()
    with pytest.raises(tk.TokensError, match='unfinished'): tk.load_tokens(tmp_path / 'part')
    s = tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'part', **args)
    assert (s['resumed_from_chunk'], s['encoded_frames']) == (done_before, 40 - 6 * done_before)   # finished chunks not redone
    assert read_folder(tmp_path / 'part') == read_folder(tmp_path / 'whole')


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    run = make_checkpoint(tmp_path / 'run')
    episodes_npz(tmp_path / 'src.npz', [6, 6])
    tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'tok', device='cpu', progress=False)
    with pytest.raises(tk.TokensError, match='overwrite'):
        tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'tok', frame_gap=2, device='cpu', progress=False)
    tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'tok', frame_gap=2, device='cpu', progress=False, overwrite=True)
    assert len(np.load(tmp_path / 'tok' / 'codes.npy')) == 6
    (tmp_path / 'mine').mkdir(); (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    with pytest.raises(tk.TokensError, match='not a token folder'):
        tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'mine', device='cpu', progress=False, overwrite=True)


def test_rendered_source_keeps_the_renderers_timeline(tmp_path):
    "Crafter worlds rendered with a skip and a stride: every rendered frame kept, indexed by the game step it shows."
    pytest.importorskip('crafter')
    run = make_checkpoint(tmp_path / 'run', 32, 16, 'data.crafter_train_seeds=1', 'data.crafter_val_seeds=1', 'data.frames_per_episode=5')
    tk.tokenize(run, 'crafter', tmp_path / 'tok', skip_first=3, frame_gap=2, chunk_frames=3, device='cpu', progress=False)
    t = tk.load_tokens(tmp_path / 'tok')
    assert t['meta']['episode_names'] == ['crafter-seed-0', 'crafter-seed-10000']
    np.testing.assert_array_equal(t['episode_starts'], [0, 5])
    np.testing.assert_array_equal(t['frame_index'], [3, 5, 7, 9, 11] * 2)
    assert t['meta']['sampling']['applied_by'] == 'renderer' and t['meta']['source']['fingerprint']['renderer'] == 'crafter'
    # what was done between the frames: 2 game steps each (the stride), none after an episode's last frame
    import crafter
    assert t['meta']['actions']['names'] == list(crafter.constants.actions) and 'game steps' in t['meta']['actions']['over_gap']
    np.testing.assert_array_equal(t['actions'].sum(1), [2, 2, 2, 2, 0] * 2)
    assert t['rewards'].shape == (10,) and t['dones'].dtype == bool and not t['dones'].any()   # nobody dies in 11 steps


def test_minerl_layout_tokens_line_up_with_their_actions_and_rewards(tmp_path):
    """MineRL trajectories (recording.mp4 + rendered.npz, one step per pair of frames) tokenized with a skip and a stride
    in chunks that cross episodes: each row's codes are its frame's, its action is its frame's step (camera yaw = frame
    number), its reward sums the steps up to the next kept frame (reward = 100 x trajectory + frame)."""
    from vqvae_kaggle.shared import write_video
    run = make_checkpoint(tmp_path / 'run')
    lengths, skip_first, frame_gap = [13, 9, 20], 2, 3
    rng, videos = np.random.default_rng(0), []
    for k, n in enumerate(lengths):
        d = tmp_path / 'minerl' / f'traj{k}'; d.mkdir(parents=True)
        videos.append(rng.integers(0, 256, (n, 4, 8, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2))
        write_video(d / 'recording.mp4', videos[-1])                # lossless: the cache decodes these exact frames
        np.savez(d / 'rendered.npz', **{'action$forward': np.ones(n - 1), 'action$camera': np.stack([np.zeros(n - 1), np.arange(n - 1)], 1),
                                         'reward': 100.0 * k + np.arange(n - 1)})
    tk.tokenize(run, str(tmp_path / 'minerl'), tmp_path / 'tok', skip_first, frame_gap, chunk_frames=4, batch_size=1,
                device='cpu', progress=False, hysteresis=0)   # plain codes, compared with encode_chunk's below
    t = tk.load_tokens(tmp_path / 'tok')
    model, _, _ = load_tokenizer(run)
    kept = [np.arange(skip_first, n, frame_gap) for n in lengths]
    assert t['meta']['episode_names'] == ['traj0', 'traj1', 'traj2'] and t['meta']['actions']['names'] == ['forward', 'camera_pitch', 'camera_yaw']
    np.testing.assert_array_equal(t['episode_starts'], np.r_[0, np.cumsum([len(i) for i in kept])[:-1]])
    np.testing.assert_array_equal(t['frame_index'], np.concatenate(kept))
    np.testing.assert_array_equal(t['codes'], tk.encode_chunk(model, np.concatenate([v[i] for v, i in zip(videos, kept)]), 1))
    np.testing.assert_array_equal(t['actions'][:, 2], np.concatenate([np.where(i < n - 1, i, 0) for i, n in zip(kept, lengths)]))
    reward = [np.r_[100.0 * k + np.arange(n - 1), 0] for k, n in enumerate(lengths)]                       # the last frame: no step
    np.testing.assert_array_equal(t['rewards'], np.concatenate([[r[a:b].sum() for a, b in zip(i, np.r_[i[1:], len(r)])]
                                                                for r, i in zip(reward, kept)]))
    assert t['dones'] is None and 'not included' in t['meta']['actions']['over_gap']
    _, acts, rew, dones = tk.TokenDataset(tmp_path / 'tok', length=3, with_rewards=True)[0]
    np.testing.assert_array_equal(rew.numpy(), t['rewards'][:3]); assert not dones.any() and acts.shape == (3, 3)


def test_token_dataset_windows_stay_within_episodes(tmp_path):
    run = make_checkpoint(tmp_path / 'run')
    _, eps, actions = episodes_npz(tmp_path / 'src.npz', [11, 5, 17, 9], interleave=True)
    tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'tok', chunk_frames=4, device='cpu', progress=False)
    ds = tk.TokenDataset(tmp_path / 'tok', length=6, stride=2)
    assert len(ds) == sum(len(range(0, n - 6 + 1, 2)) for n in [11, 5, 17, 9])
    codes = np.load(tmp_path / 'tok' / 'codes.npy')
    for i in range(len(ds)):
        tokens, acts = ds[i]
        assert tokens.shape == (6, 8, 16) and tokens.dtype == torch.int64 and acts.shape == (6, 3)
        assert len(set(acts[:, 0].tolist())) == 1 and (np.diff(acts[:, 1].numpy()) == 1).all()   # one episode, consecutive frames
        s = int(ds.starts[i]); np.testing.assert_array_equal(tokens.numpy(), codes[s:s + 6])
    scored = tk.TokenDataset(tmp_path / 'tok', length=6, stride=2, with_rewards=True)
    for i in range(len(scored)):
        s, (_, _, rew, done) = int(scored.starts[i]), scored[i]
        np.testing.assert_array_equal(rew.numpy(), np.load(tmp_path / 'tok' / 'rewards.npy')[s:s + 6])
        np.testing.assert_array_equal(done.numpy(), np.load(tmp_path / 'tok' / 'dones.npy')[s:s + 6])
    np.savez(tmp_path / 'plain.npz', frames=np.zeros((8, 16, 32, 3), np.uint8))
    tk.tokenize(run, tmp_path / 'plain.npz', tmp_path / 'plain', device='cpu', progress=False)
    assert tk.load_tokens(tmp_path / 'plain')['rewards'] is None
    with pytest.raises(tk.TokensError, match='plain: holds no rewards.npy'):
        tk.TokenDataset(tmp_path / 'plain', length=4, with_rewards=True)


def test_cli_round_trip(tmp_path, capsys):
    run = make_checkpoint(tmp_path / 'run')
    frames, _, _ = episodes_npz(tmp_path / 'src.npz', [9, 12])
    tok, dec, mp4 = tmp_path / 'tok', tmp_path / 'dec.npy', tmp_path / 'dec.mp4'
    assert main(['tokenize', '--checkpoint', str(run), '--data', str(tmp_path / 'src.npz'), '--out', str(tok), '--chunk-frames', '5',
                 '--batch-size', '4', '--device', 'cpu', '--no-progress', '--hysteresis', '0']) == 0   # plain: the model's reconstruction
    assert main(['decode', '--tokens', str(tok), '--out', str(dec), '--video', str(mp4), '--compare', '--batch-size', '4',
                 '--device', 'cpu', '--no-progress']) == 0
    model, _, _ = load_tokenizer(run)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    recon = torch.cat([reconstruct(model, x[i:i + 4])[0] for i in range(0, len(x), 4)])
    np.testing.assert_array_equal(np.load(dec), (recon * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert video_frame_count(mp4) == 21
    import av
    with av.open(str(mp4)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 16)   # originals | decoded
        shown = np.stack([f.to_ndarray(format='rgb24') for f in c.decode(video=0)]).astype(np.float32)
    # which half is which: the left half is the source frames, the right half the decoded ones (H.264 is lossy: each
    # half is much nearer its own frames than the other's, and near them in absolute terms: measured here, at most 10.3
    # and 1.9 levels from its own, at least 51 from the other's)
    left, right, decoded = shown[:, :, :32], shown[:, :, 32:], np.load(dec).astype(np.float32)
    mae = lambda a, b: np.abs(a - b).mean(axis=(1, 2, 3))
    assert (mae(left, frames) < 16).all() and (mae(right, decoded) < 16).all(), (mae(left, frames).max(), mae(right, decoded).max())
    assert (mae(left, frames) < mae(left, decoded) / 3).all() and (mae(right, decoded) < mae(right, frames) / 3).all()
    assert main(['decode', '--tokens', str(tok), '--out', str(tmp_path / 'ep1.npy'), '--episode', '1', '--max-frames', '4',
                 '--device', 'cpu', '--no-progress']) == 0
    np.testing.assert_array_equal(np.load(tmp_path / 'ep1.npy'), np.load(dec)[9:13])
    capsys.readouterr()
    assert main(['tokenize', '--checkpoint', str(run), '--data', str(tmp_path / 'src.npz'), '--out', str(tok), '--frame-gap', '2',
                 '--device', 'cpu', '--no-progress']) == 2
    assert capsys.readouterr().err.startswith('error: ')


def test_cli_export_then_tokenize_gives_the_same_codes(tmp_path):
    "`vqvae-kaggle export`, then tokenize and decode with the slim export: the codes and frames of the training checkpoint."
    assert callable(ck.export_tokenizer)   # a rename fails here instead of skipping silently
    run = make_checkpoint(tmp_path / 'run')
    episodes_npz(tmp_path / 'src.npz', [9, 12])
    assert main(['export', '--checkpoint', str(run), '--out', str(tmp_path / 'slim')]) == 0
    slim = next(p for p in tmp_path.iterdir() if p.name.startswith('slim') and p.suffix == '.safetensors')
    for name, ckpt in (('a', run), ('b', slim)):
        assert main(['tokenize', '--checkpoint', str(ckpt), '--data', str(tmp_path / 'src.npz'), '--out', str(tmp_path / name),
                     '--device', 'cpu', '--no-progress']) == 0
    assert (tmp_path / 'a' / 'codes.npy').read_bytes() == (tmp_path / 'b' / 'codes.npy').read_bytes()
    assert main(['decode', '--tokens', str(tmp_path / 'b'), '--out', str(tmp_path / 'b.npy'), '--device', 'cpu', '--no-progress']) == 0
    # codes made with the checkpoint decode with its export (it records the checkpoint's SHA-256), to the same frames
    assert main(['decode', '--tokens', str(tmp_path / 'a'), '--checkpoint', str(slim), '--out', str(tmp_path / 'a.npy'),
                 '--device', 'cpu', '--no-progress']) == 0
    np.testing.assert_array_equal(np.load(tmp_path / 'a.npy'), np.load(tmp_path / 'b.npy'))


def test_tokenize_encodes_with_hysteresis_by_default_whatever_the_chunking(tmp_path, monkeypatch):
    "The default (an L2-normalised tokenizer: margin 0.02) is recorded in meta.json and the plan; chunked, resumed and whole agree."
    from vqvae_kaggle.token_stability import stable_encode, default_margin
    run = make_checkpoint(tmp_path / 'run')
    frames, eps, _ = episodes_npz(tmp_path / 'src.npz', [13, 7, 20])
    tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'whole', chunk_frames=64, batch_size=4, device='cpu', progress=False)
    model, _, _ = load_tokenizer(run)
    margin = default_margin(model.quantizer)
    t = tk.load_tokens(tmp_path / 'whole')
    assert margin > 0 and t['meta']['stability']['mechanism'] == 'hysteresis' and t['meta']['stability']['margin'] == margin
    assert t['meta']['plan']['hysteresis'] == margin
    starts = t['episode_starts']
    for a, b in zip(starts, [*starts[1:], len(frames)]):            # episode by episode: never carried across a start
        np.testing.assert_array_equal(t['codes'][a:b], stable_encode(model, frames[a:b], margin))
    real, seen = tk.stable_encode, []
    def failing(*a, **k):
        seen.append(1)
        if len(seen) > 3: raise RuntimeError('interrupted')
        return real(*a, **k)
    args = dict(chunk_frames=6, batch_size=4, device='cpu', progress=False)
    monkeypatch.setattr(tk, 'stable_encode', failing)
    with pytest.raises(RuntimeError, match='interrupted'): tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'part', **args)
    monkeypatch.setattr(tk, 'stable_encode', real)
    s = tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'part', **args)   # resumes after chunk 3: the carry-over read from disk
    assert s['resumed_from_chunk'] == 3
    np.testing.assert_array_equal(np.load(tmp_path / 'part' / 'codes.npy'), t['codes'])
    plain = tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'plain', device='cpu', progress=False, hysteresis=0)
    m = tk.load_tokens(tmp_path / 'plain')['meta']
    assert plain['encoded_frames'] == 40 and m['stability']['mechanism'] == 'none' and 'hysteresis' not in m['plan']
    with pytest.raises(tk.TokensError, match='>= 0'): tk.tokenize(run, tmp_path / 'src.npz', tmp_path / 'bad', hysteresis=-1, device='cpu')
