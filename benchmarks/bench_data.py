"""Data pipeline throughput: extraction (decode + crop + resize into the cache) and batch loading.

Not a test: run it by hand and read the table.

    PYTHONPATH=. python benchmarks/bench_data.py [--videos 8] [--frames 300] [--batches 60]

It builds a small MineRL-style dataset from Crafter worlds (each frame upscaled to 640x360 and encoded as ordinary
lossy H.264, like real gameplay recordings), then measures on this machine, in one run:

- extraction: frames/s decoded, cropped and resized to 128x72 and written to the shard cache, with 1 worker process
  and with one per core; and the time to load the finished cache again;
- loading: batches/s at batch 256, 128x72, of `BatchLoader` (CPU, and on the GPU resident / streamed when there is
  one) against the obvious baseline: the same frames as a PNG folder read one file at a time with PIL through a
  `torch.utils.data.DataLoader` with one worker process per core.
"""
import argparse, os, shutil, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_videos(root: Path, n_videos: int, n_frames: int) -> int:
    "MineRL-style folders traj-k/recording.mp4 of Crafter gameplay at 640x360, lossy H.264."
    import av
    from vqvae_kaggle.sources.crafter import render_crafter_episode
    for k in range(n_videos):
        frames = render_crafter_episode(k, n_frames, skip_first=0, frame_gap=1)
        (root / f'traj-{k}').mkdir(parents=True)
        with av.open(str(root / f'traj-{k}' / 'recording.mp4'), 'w') as out:
            s = out.add_stream('libx264', rate=20, options={'crf': '23', 'preset': 'veryfast'})
            s.width, s.height, s.pix_fmt = 640, 360, 'yuv420p'
            for f in frames:
                big = np.asarray(Image.fromarray(f).resize((640, 360), Image.Resampling.NEAREST))
                for p in s.encode(av.VideoFrame.from_ndarray(big, format='rgb24')): out.mux(p)
            for p in s.encode(): out.mux(p)
    return n_videos * n_frames


def time_extraction(root: Path, cache: Path, workers: int) -> tuple[float, int]:
    from vqvae_kaggle.config import DataConfig
    from vqvae_kaggle.sources import parse_source
    d = DataConfig(source=str(root), width=128, height=72, skip_first=0, frame_gap=1, cache_dir=str(cache), workers=workers)
    t0 = time.perf_counter()
    fs, _ = parse_source(d.source).frames(d, progress=False)
    return time.perf_counter() - t0, len(fs)


class PngFolder(torch.utils.data.Dataset):
    "The baseline: one PNG per frame, opened and decoded with PIL per item."
    def __init__(self, files): self.files = files
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            return torch.from_numpy(np.array(im.convert('RGB'))).permute(2, 0, 1)


def batches_per_second(batches, n_batches: int, sync=lambda: None) -> float:
    "Rate at which the endless iterator `batches` yields, after one warm-up batch (worker start, first allocation)."
    next(batches); sync()
    t0 = time.perf_counter()
    for _ in range(n_batches): next(batches)
    sync()
    return n_batches / (time.perf_counter() - t0)


def endless(epoch_iter):
    "Batches of epoch 0, 1, 2, ... where `epoch_iter(epoch)` iterates over one epoch."
    epoch = 0
    while True:
        yield from epoch_iter(epoch); epoch += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--videos', type=int, default=8)
    ap.add_argument('--frames', type=int, default=300, help='frames per video')
    ap.add_argument('--batches', type=int, default=60, help='batches timed per loader')
    ap.add_argument('--batch-size', type=int, default=256)
    ap.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    from vqvae_kaggle.data import BatchLoader
    tmp = Path(tempfile.mkdtemp(prefix='bench-data-'))
    rows = []
    try:
        t0 = time.perf_counter()
        n = make_videos(tmp / 'videos', args.videos, args.frames)
        print(f'made {args.videos} videos x {args.frames} frames (640x360 H.264) in {time.perf_counter() - t0:.1f} s', file=sys.stderr)

        for w in sorted({1, args.workers}):
            secs, kept = time_extraction(tmp / 'videos', tmp / f'cache-{w}', w)
            rows.append((f'extraction, {w} worker process{"es" if w > 1 else ""}', f'{kept / secs:,.0f} frames/s',
                         f'{kept} frames 640x360 H.264 -> 128x72 in {secs:.1f} s'))
        secs, kept = time_extraction(tmp / 'videos', tmp / f'cache-{args.workers}', args.workers)
        rows.append(('loading the finished cache again', f'{secs:.2f} s', f'{kept} frames, every shard re-hashed'))

        from vqvae_kaggle.sources.cache import load_cache_entry
        frames, _ = load_cache_entry(next(p for p in (tmp / f'cache-{args.workers}').iterdir()))
        frames = frames.frames
        png = tmp / 'png'; png.mkdir()
        files = []
        for i, f in enumerate(frames):
            files.append(png / f'{i:06d}.png'); Image.fromarray(f).save(files[-1])
        bs = args.batch_size
        baseline = torch.utils.data.DataLoader(PngFolder(files), batch_size=bs, shuffle=True, num_workers=args.workers,
                                               drop_last=True, persistent_workers=True,
                                               generator=torch.Generator().manual_seed(0))
        base = batches_per_second(endless(lambda epoch: iter(baseline)), args.batches)
        rows.append((f'baseline: PNG folder, PIL per frame, DataLoader({args.workers} workers)', f'{base:,.1f} batches/s',
                     f'batch {bs}, 128x72, CPU'))
        for hflip in (False, True):
            bl = BatchLoader(frames, bs, 'cpu', seed=0, hflip=hflip)
            r = batches_per_second(endless(bl.epoch_batches), args.batches)
            rows.append((f'BatchLoader, CPU{", hflip" if hflip else ""}', f'{r:,.1f} batches/s', f'{r / base:.0f}x baseline'))
        if torch.cuda.is_available():
            sync = torch.cuda.synchronize
            for resident in (True, False):
                bl = BatchLoader(frames, bs, 'cuda', seed=0, hflip=True, resident=resident)
                r = batches_per_second(endless(bl.epoch_batches), args.batches * 10, sync)
                rows.append((f'BatchLoader, {torch.cuda.get_device_name()}, {"GPU-resident" if resident else "pinned streaming"}, hflip',
                             f'{r:,.0f} batches/s', f'{r / base:.0f}x baseline'))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f'\nData pipeline throughput ({os.cpu_count()} CPU cores, torch {torch.__version__})\n')
    print('| what | throughput | notes |\n|---|---|---|')
    for r in rows: print('| ' + ' | '.join(r) + ' |')


if __name__ == '__main__':
    main()
