"""Render time per world of the default Minecraft task (160 frames at 256x144 rendered, box-filtered to 128x72,
frame_gap 2, skip_first 20), one process at a time and two in parallel. Prints one JSON line per world and a summary.

    .venv/bin/python benchmarks/results/minecraft-render/time_render.py --worlds 0 1 2 3 --parallel 1
    .venv/bin/python benchmarks/results/minecraft-render/time_render.py --worlds 0 1 2 3 --parallel 2
"""
import argparse, json, os, time
from concurrent.futures import ThreadPoolExecutor
from vqvae_kaggle.sources import minecraft as mc, minecraft_runtime as rt

ap = argparse.ArgumentParser()
ap.add_argument('--worlds', type=int, nargs='+', default=[0, 1, 2, 3])
ap.add_argument('--parallel', type=int, default=1)
ap.add_argument('--frames', type=int, default=160)
a = ap.parse_args()
rt.check_minecraft(progress=False)                       # environment and OpenGL route found before the clock starts

def one(seed):
    t = time.perf_counter()
    fs = mc.render_minecraft_episode(seed, a.frames, 128, 72, render_scale=2, resample='area', skip_first=20, frame_gap=2)
    s = time.perf_counter() - t
    row = dict(world=seed, kind=mc.world_spec(seed), frames=len(fs), seconds=round(s, 2), fps=round(len(fs) / s, 1))
    print(json.dumps(row), flush=True)
    return row

t0 = time.perf_counter()
with ThreadPoolExecutor(a.parallel) as pool:            # each render is its own process: threads only wait on them
    rows = list(pool.map(one, a.worlds))
wall = time.perf_counter() - t0
n = sum(r['frames'] for r in rows)
print(json.dumps(dict(parallel=a.parallel, worlds=len(rows), frames=n, wall_s=round(wall, 1), frames_per_s=round(n / wall, 1),
                      mean_s_per_world=round(sum(r['seconds'] for r in rows) / len(rows), 1), release=rt.game_release(),
                      route=rt.gl_route()['gl'], load=os.getloadavg())))
