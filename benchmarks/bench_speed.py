"""Speed benchmark: for each preset on the device present, ms per optimisation step, images/s, peak memory, FLOPs per
image counted from the layers and model FLOPs utilisation (MFU), and the share of a real `fit`'s wall clock spent
outside optimisation steps (evaluation, grids, checkpoints, logging, batch loading).

    .venv/bin/python benchmarks/bench_speed.py --minutes 10          # GPU: cpu,default; CPU: cpu x threads 1,N,auto x busy 0,1
    .venv/bin/python benchmarks/bench_speed.py --presets cpu --threads 1,2,auto --busy 0,1 --steps 30 --minutes 9   # CPU rows
    .venv/bin/python benchmarks/bench_speed.py --presets cpu --steps 5 --minutes 0.2 --data synthetic --out /tmp/speed  # smoke test

Run it from the repository root on a quiet machine (it warns when the load average is above 0.5). Per preset:

(a) step speed, one row per combination of `--threads` and `--busy`: a fresh `Trainer` on the preset's data,
    `--warmup` untimed steps (the first holds the codebook's k-means initialisation; torch.compile, where on, is done
    when the trainer is built), then `--steps` timed `train_step` calls (CUDA synchronised around each). Threads N:
    run.threads=N and torch.set_num_threads(N), steps called directly on the trainer's batches. Threads 'auto' (the
    default on CUDA, and one row on the CPU): the steps run inside `fit` (ended by run.max_steps), so the trainer
    picks its threads from the load it sees, busy processes included. `--busy K`: K background processes each
    spinning one core during the row, always killed afterwards, even when this script is killed. When the preset
    uses LPIPS, the timed steps run where its schedule has switched it on (steady state).
    FLOPs: once per preset, one step of an uncompiled trainer under `torch.utils.flop_counter.FlopCounterMode`
    (matmuls and convolutions, forward and backward, of the whole step: model, quantizer lookup, LPIPS if on) divided
    by its batch. MFU = FLOPs per image x images/s / the card's dense peak for the precision the trainer chose
    (`PEAK_TFLOPS`); n/a on the CPU or a card not in the table.
(b) overhead share: a fresh `Trainer` runs `fit(budget_minutes=--minutes)` with the preset's own cadence (held-out
    evaluation and sample grids every run.eval_every_steps/minutes and at the end, checkpoints likewise, metric logging;
    wandb off unless `--set run.wandb=...`), with its methods timed: the share of the fit's wall clock outside
    `train_step` is the overhead, split into evaluation + grids, checkpoints, logging and other. Once per preset, no
    busy processes, threads 'auto' when it is among --threads (else the most). The share depends on the fit's length
    against the cadence: use a run-like duration and the same one when comparing. `--minutes 0` skips it.

Data: `--data preset` (default) uses the preset's own frames through the frame cache (data-cache/; rendered first if
missing, outside any timing); `--data synthetic` uses random uint8 frames of the preset's size, as many as the preset
would render (the same epoch length).

Writes <--out, default benchmarks/results/speed>/<device-tag>.json and .md; the tag (or `--tag`) is e.g. `cpu-2core`
or `nvidia-h200`, with `-synthetic` appended for synthetic data. Not a test.
"""
from __future__ import annotations
import argparse, atexit, contextlib, functools, gc, json, math, os, platform, re, resource, shlex, signal, subprocess
import sys, tempfile, time, warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqvae_kaggle.config import Config, apply_overrides, config_to_dict, RunConfig  # noqa: E402
from vqvae_kaggle.presets import get_preset  # noqa: E402
from vqvae_kaggle.data import load_splits  # noqa: E402
from vqvae_kaggle.checkpoint import resolve_device  # noqa: E402
from vqvae_kaggle.frames import FrameSet  # noqa: E402
from vqvae_kaggle.losses import LPIPSUnavailable, build_lpips  # noqa: E402
from vqvae_kaggle.model import count_parameters  # noqa: E402

# Applied to every preset before --set: no wandb (its offline writer would be timed as logging overhead).
BASE_SETTINGS = ['run.wandb=disabled']

# Dense (no sparsity) peak tensor/vector throughput in TFLOP/s by precision, from the vendors' data sheets.
# Matched in order against torch.cuda.get_device_name() (lower case); the first entry whose every pattern is found wins.
PEAK_TFLOPS = [
    (('h200', 'nvl'), 'H200 NVL', dict(bf16=835.5, fp16=835.5, tf32=417.5, fp32=60.0)),
    (('h200',), 'H200 SXM', dict(bf16=989.0, fp16=989.0, tf32=494.7, fp32=66.9)),
    (('h100', 'pcie'), 'H100 PCIe', dict(bf16=756.0, fp16=756.0, tf32=378.0, fp32=51.2)),
    (('h100', 'nvl'), 'H100 NVL', dict(bf16=835.0, fp16=835.0, tf32=417.5, fp32=60.0)),
    (('h100',), 'H100 SXM', dict(bf16=989.0, fp16=989.0, tf32=494.7, fp32=66.9)),
    (('a100',), 'A100', dict(bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5)),
    ((r'\bl4\b',), 'L4', dict(bf16=121.0, fp16=121.0, tf32=60.0, fp32=30.3)),
    ((r'\bt4\b',), 'T4', dict(fp16=65.0, fp32=8.1)),                       # bf16 is emulated on a T4: no peak
    (('v100', 'pcie'), 'V100 PCIe', dict(fp16=112.0, fp32=14.0)),
    (('v100',), 'V100 SXM2', dict(fp16=125.0, fp32=15.7)),
    (('p100', 'pcie'), 'P100 PCIe', dict(fp16=18.7, fp32=9.3)),
    (('p100',), 'P100 SXM2', dict(fp16=21.2, fp32=10.6)),
]


def peak_tflops(device: torch.device, precision: str) -> tuple[float | None, str]:
    "(dense peak TFLOP/s of this card for `precision`, what was matched) or (None, why not)."
    if device.type != 'cuda': return None, 'n/a on the CPU (no reference peak)'
    name = torch.cuda.get_device_name(device).lower()
    for keys, label, peaks in PEAK_TFLOPS:
        if all(re.search(k, name) for k in keys):
            if precision in peaks: return peaks[precision], f'{label} {precision} {peaks[precision]:g} TFLOP/s dense'
            return None, f'n/a: no {precision} peak listed for {label}'
    return None, f'n/a: {torch.cuda.get_device_name(device)!r} is not in PEAK_TFLOPS'


# ---------------------------------------------------------------------------------------------------------------------
# Everything that knows the trainer's API is in this section.
from vqvae_kaggle.train import Trainer  # noqa: E402


def build_trainer(cfg: Config, out_dir, splits) -> Trainer:
    return Trainer(cfg, out_dir, resume=False, progress=False, splits=splits)


def endless_batches(trainer: Trainer):
    "The trainer's own batches (uint8, on its device), epoch after epoch."
    epoch = 0
    while True:
        yield from trainer.loader.epoch_batches(epoch)
        epoch += 1


def train_step(trainer: Trainer, batch):
    "One optimisation step; the values it logs (a dict), or None when it was skipped."
    return trainer.train_step(batch)


def steady_start(cfg: Config) -> tuple[int, int]:
    "(epoch, step) from which the loss includes LPIPS when the preset uses it (its schedule counts steps or epochs), else (0, 0)."
    loss = cfg.loss
    if loss.lpips <= 0: return 0, 0
    return (loss.lpips_start, 0) if loss.lpips_unit == 'epochs' else (0, loss.lpips_start)


def to_steady_state(trainer: Trainer) -> None:
    "Move the trainer to where its loss includes LPIPS, if the preset uses it."
    epoch, step = steady_start(trainer.cfg)
    trainer.epoch, trainer.step = max(trainer.epoch, epoch), max(trainer.step, step)


def fit_steps(cfg: Config, n: int) -> Config:
    "`cfg` ending its fit after `n` steps from its steady start; its final evaluation (untimed) on a few frames only."
    return apply_overrides(cfg, [f'run.max_steps={steady_start(cfg)[1] + n}', 'run.val_frames=8', 'run.sample_frames=2'])


def lpips_in(out) -> bool: return isinstance(out, dict) and 'lpips' in out


def precision_name(trainer: Trainer) -> str:
    dtype = trainer.precision.dtype
    if dtype is None:   # float32; cuDNN convolutions run in TF32 on Ampere and later unless it is switched off
        tf32 = (trainer.device.type == 'cuda' and torch.backends.cudnn.allow_tf32
                and torch.cuda.get_device_capability(trainer.device) >= (8, 0))
        return 'tf32' if tf32 else 'fp32'
    return {torch.bfloat16: 'bf16', torch.float16: 'fp16'}.get(dtype, str(dtype))


def run_setting(cfg: Config, field: str, value) -> Config:
    "`run.<field>=value` when this version of the config has the field, else `cfg` unchanged."
    return apply_overrides(cfg, [f'run.{field}={value}']) if field in RunConfig.__dataclass_fields__ else cfg


def eager(cfg: Config) -> Config:
    "Without torch.compile (where the config has it): the FLOP counter must see every matmul and convolution."
    return run_setting(cfg, 'compile', 'off')


# (object, method, bucket): what a fit's wall clock is split into; the rest is 'other'.
TIMED_METHODS = [('trainer', 'train_step', 'steps'),
                 ('trainer', 'evaluate_now', 'evaluation + grids'),
                 ('trainer', 'save', 'checkpoints'),
                 ('tracker', 'log', 'logging'), ('tracker', 'log_image', 'logging'), ('tracker', 'alert', 'logging')]


def instrument(trainer: Trainer, timer: 'Buckets') -> list[str]:
    "Time the trainer's steps, evaluation, checkpoints and logging (methods replaced on this instance only)."
    objects, done = dict(trainer=trainer, tracker=getattr(trainer, 'tracker', None)), []
    for obj_name, attr, bucket in TIMED_METHODS:
        obj = objects[obj_name]
        if obj is not None and callable(getattr(obj, attr, None)):
            setattr(obj, attr, timer.wrap(bucket, getattr(obj, attr))); done.append(f'{obj_name}.{attr}')
    return done


def run_fit(trainer: Trainer, minutes: float | None) -> dict: return trainer.fit(budget_minutes=minutes)


def wrap_train_step(trainer: Trainer, make):
    "Replace this trainer's train_step by `make(train_step)` (which `fit` then calls too); return the wrapper."
    trainer.train_step = make(trainer.train_step)
    return trainer.train_step
# ---------------------------------------------------------------------------------------------------------------------


class Buckets:
    "Exclusive wall time per bucket of wrapped calls (a checkpoint inside an evaluation counts as a checkpoint only)."
    def __init__(self, sync):
        self.seconds, self.calls, self.first, self._stack, self.sync = defaultdict(float), defaultdict(int), {}, [], sync

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.sync(); t0 = time.perf_counter(); self._stack.append(0.0)
            try: return fn(*args, **kwargs)
            finally:
                self.sync(); dt = time.perf_counter() - t0; inner = self._stack.pop()
                self.seconds[name] += dt - inner; self.calls[name] += 1
                self.first.setdefault(name, dt - inner)
                if self._stack: self._stack[-1] += dt
        return timed


def make_sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)


# -- background load ----------------------------------------------------------------------------------------------------
# Each busy process spins one core and exits by itself once its parent is gone (even if the parent is SIGKILLed).
BUSY_CODE = ('import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n'
             '    for _ in range(200000): pass\n')
_BUSY: list[subprocess.Popen] = []


def _kill_busy() -> None:
    while _BUSY:
        p = _BUSY.pop()
        if p.poll() is None: p.kill()
        with contextlib.suppress(Exception): p.wait(timeout=10)


atexit.register(_kill_busy)


def exit_on_signals() -> None:
    "A SIGTERM/SIGHUP ends the run through the normal exits (finally, atexit), so the busy processes are killed."
    def _terminate(signum, frame): raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP): signal.signal(s, _terminate)


@contextlib.contextmanager
def busy_processes(n: int):
    "`n` background processes, each keeping one core busy, for the duration of the block."
    try:
        for _ in range(n):
            _BUSY.append(subprocess.Popen([sys.executable, '-c', BUSY_CODE], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if n: time.sleep(0.5)  # let them get going
        yield [p.pid for p in _BUSY]
    finally:
        _kill_busy()


# -- memory ---------------------------------------------------------------------------------------------------------------
def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'): return int(line.split()[1]) * 1024
    except OSError: pass
    return None


def reset_peak_memory(device: torch.device) -> str:
    "Start a new peak; returns how the CPU peak is measured ('window' or 'process lifetime')."
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device); return 'window'
    try:  # Linux >= 4.0: reset the process's RSS high-water mark to its current RSS
        Path('/proc/self/clear_refs').write_text('5'); return 'window' if _vm_hwm_bytes() else 'process lifetime'
    except OSError: return 'process lifetime'


def peak_memory(device: torch.device, how: str) -> dict:
    if device.type == 'cuda':
        return dict(peak_bytes=torch.cuda.max_memory_allocated(device), reserved_bytes=torch.cuda.max_memory_reserved(device),
                    kind='torch.cuda.max_memory_allocated (tensors on the GPU)')
    hwm = _vm_hwm_bytes() if how == 'window' else None
    if hwm is not None: return dict(peak_bytes=hwm, kind='peak RSS of the whole process during the timed steps')
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
    return dict(peak_bytes=rss, kind='peak RSS of the whole process since it started')


# -- data -------------------------------------------------------------------------------------------------------------------
def synthetic_splits(cfg: Config) -> tuple[FrameSet, FrameSet]:
    "Random uint8 frames of the preset's size: as many training frames as it would render, run.val_frames held out."
    d = cfg.data
    worlds = {'minecraft': d.minecraft_train_worlds, 'crafter': d.crafter_train_seeds}.get(d.source)
    n_train = max(worlds * d.frames_per_episode if worlds else 4096, 2 * cfg.optim.batch_size)
    n_val = max(cfg.run.val_frames, cfg.run.sample_frames, 1)
    rng = np.random.default_rng(0)
    make = lambda n: FrameSet(rng.integers(0, 256, (n, d.height, d.width, 3), dtype=np.uint8), np.zeros(n, np.int64), ['synthetic'])
    return make(n_train), make(n_val)


def preset_config(name: str, device: torch.device, overrides: list[str]) -> Config:
    return apply_overrides(get_preset(name), [*BASE_SETTINGS, f'run.device={device}', *overrides])


DEFAULT_THREADS = torch.get_num_threads()


def with_threads(cfg: Config, threads: int | None) -> Config:
    "`threads` None: the trainer's own choice (run.threads as the preset has it), starting from torch's default."
    if threads is None: torch.set_num_threads(DEFAULT_THREADS); return cfg   # undo what an earlier row set
    return run_setting(cfg, 'threads', threads)


def without_lpips(cfg: Config) -> Config:
    return apply_overrides(cfg, ['loss.lpips=0', 'loss.lpips_step=0'])


# -- measurements -------------------------------------------------------------------------------------------------------------
def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda': torch.cuda.empty_cache()


class StepProbe:
    "Wraps train_step: times the calls after `warmup` (CUDA synchronised), starts the memory peak there and reads it after the last."
    def __init__(self, fn, device: torch.device, warmup: int, steps: int):
        self.fn, self.device, self.warmup, self.steps, self.sync = fn, device, warmup, steps, make_sync(device)
        self.n, self.times, self.lpips_steps, self.warmup_seconds, self.memory, self.threads = 0, [], 0, 0.0, None, None
        self._how = None

    def __call__(self, batch):
        self.n += 1
        timed = self.warmup < self.n <= self.warmup + self.steps
        if self.n == self.warmup + 1: self.sync(); self._how = reset_peak_memory(self.device)
        self.sync(); t0 = time.perf_counter()
        out = self.fn(batch)
        self.sync(); dt = time.perf_counter() - t0
        if timed: self.times.append(dt); self.lpips_steps += lpips_in(out)
        elif self.n <= self.warmup: self.warmup_seconds += dt
        if self.n == self.warmup + self.steps:
            self.memory, self.threads = peak_memory(self.device, self._how), torch.get_num_threads()
        return out


def measure_steps(cfg: Config, splits, device: torch.device, threads: int | None, busy: int, warmup: int, steps: int) -> dict:
    """(a): ms per step, images/s and peak memory of `cfg` with `threads` and `busy` processes. With a thread count the
    steps are called directly on the trainer's batches; with None ('auto') on the CPU they run inside `fit`, which
    picks its threads from the load it sees (the busy processes included)."""
    in_fit = threads is None and device.type == 'cpu'
    with tempfile.TemporaryDirectory(prefix='bench-speed-') as tmp:
        run_cfg = with_threads(cfg, threads)
        trainer = build_trainer(fit_steps(run_cfg, warmup + steps) if in_fit else run_cfg, tmp, splits)
        if threads: torch.set_num_threads(threads)
        to_steady_state(trainer)
        probe = wrap_train_step(trainer, lambda fn: StepProbe(fn, device, warmup, steps))
        load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
        with busy_processes(busy) as pids:
            if in_fit: run_fit(trainer, None)
            else:
                batches = endless_batches(trainer)
                for _ in range(warmup + steps): train_step(trainer, next(batches))
                del batches
            busy_alive = sum(1 for p in _BUSY if p.poll() is None)
        if len(probe.times) < steps:
            raise RuntimeError(f'only {len(probe.times)} of {steps} timed steps ran ({warmup} warm-up)')
        times = probe.times
        r = dict(threads=probe.threads, threads_asked=threads or 'auto', steps_in='fit' if in_fit else 'train_step loop',
                 busy=busy, busy_pids=pids, busy_alive_at_end=busy_alive, loadavg_1min_before=load, batch=trainer.global_batch,
                 warmup=warmup, warmup_seconds=round(probe.warmup_seconds, 2), steps=steps,
                 ms_per_step=1e3 * float(np.mean(times)), ms_per_step_median=1e3 * float(np.median(times)),
                 ms_per_step_min=1e3 * float(np.min(times)), precision=precision_name(trainer),
                 lpips_in_step=probe.lpips_steps == steps, params=count_parameters(trainer.model), memory=probe.memory)
        del trainer, probe
    _release(device)
    r['steps_per_s'] = 1e3 / r['ms_per_step']
    r['images_per_s'] = r['batch'] * r['steps_per_s']
    return r


FLOP_BATCH = 8   # every layer works per image, so FLOPs per image do not depend on the batch: count on a small one


def count_step_flops(cfg: Config, splits, device: torch.device) -> tuple[float, int]:
    "(matmul + convolution FLOPs of one training step, its batch), on an eager (uncompiled) trainer after one warm-up step."
    from torch.utils.flop_counter import FlopCounterMode
    small = apply_overrides(cfg, [f'optim.batch_size={min(cfg.optim.batch_size, FLOP_BATCH)}'])
    with tempfile.TemporaryDirectory(prefix='bench-speed-flops-') as tmp:
        trainer = build_trainer(eager(small), tmp, splits)
        to_steady_state(trainer)
        batches = endless_batches(trainer)
        train_step(trainer, next(batches))          # k-means initialisation: not a regular step
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with FlopCounterMode(display=False) as fc: train_step(trainer, next(batches))
        flops, batch = fc.get_total_flops(), trainer.global_batch
        del trainer, batches
    _release(device)
    return flops, batch


def add_flops(r: dict, flops_per_image: float | None, device: torch.device) -> dict:
    peak, peak_note = peak_tflops(device, r['precision'])
    r['gflop_per_image'] = flops_per_image / 1e9 if flops_per_image else None
    r['achieved_tflops'] = flops_per_image * r['images_per_s'] / 1e12 if flops_per_image else None
    r['peak_tflops'], r['peak_note'] = peak, peak_note
    r['mfu'] = r['achieved_tflops'] / peak if peak and r['achieved_tflops'] else None
    return r


def measure_overhead(cfg: Config, splits, device: torch.device, threads: int | None, minutes: float) -> dict:
    "(b): a real fit for `minutes` with the preset's cadence; wall time per bucket and the share outside steps."
    sync = make_sync(device)
    with tempfile.TemporaryDirectory(prefix='bench-speed-fit-') as tmp:
        trainer = build_trainer(with_threads(cfg, threads), tmp, splits)
        if threads: torch.set_num_threads(threads)
        timer = Buckets(sync)
        timed = instrument(trainer, timer)
        sync(); t0 = time.perf_counter()
        summary = run_fit(trainer, minutes)
        sync(); wall = time.perf_counter() - t0
        batch, fit_threads = trainer.global_batch, torch.get_num_threads()
        del trainer
    _release(device)
    buckets = {k: round(v, 3) for k, v in timer.seconds.items()}
    buckets['other'] = round(wall - sum(timer.seconds.values()), 3)
    steps_s, first_s = timer.seconds.get('steps', 0.0), timer.first.get('steps', 0.0)
    return dict(minutes=minutes, wall_seconds=round(wall, 3), session_seconds=summary.get('session_seconds'),
                steps=summary.get('step'), epochs_done=summary.get('epochs_done'), stopped=summary.get('stopped'),
                threads_asked=threads or 'auto', threads_at_end=fit_threads, trainer_timing=summary.get('timing'),
                timed_methods=timed, calls=dict(timer.calls), seconds=buckets, first_step_seconds=round(first_s, 3),
                share_outside_steps=1 - steps_s / wall if wall > 0 else None,
                share_outside_steps_after_first=(1 - (steps_s - first_s) / (wall - first_s)) if wall > first_s else None,
                share={k: v / wall for k, v in buckets.items()} if wall > 0 else {},
                fit_images_per_s=(summary.get('step') or 0) * batch / wall if wall > 0 else None,
                projected_share=projected_share(cfg, timer))


def projected_share(cfg: Config, timer: 'Buckets') -> float | None:
    """The share of a long run's wall clock outside steps at the preset's cadence, from this fit's measured costs: a step
    (after the first), an evaluation with its grids, a checkpoint. A short fit reaches few cadence points (or only the
    final evaluation), so its own share says little about a 12-hour session; this extrapolates it."""
    r, n = cfg.run, timer.calls.get('steps', 0)
    if n < 2 or not timer.calls.get('evaluation + grids'): return None
    step = (timer.seconds['steps'] - timer.first['steps']) / (n - 1)
    per = lambda k: timer.seconds.get(k, 0.0) / max(timer.calls.get(k, 0), 1)
    def interval(steps, minutes):   # seconds of training between two of them: whichever of the two limits comes first
        return min(x for x in (steps * step if steps else None, minutes * 60 if minutes else None, math.inf) if x is not None)
    extra = per('evaluation + grids') / interval(r.eval_every_steps, r.eval_every_minutes) \
            + per('checkpoints') / interval(r.checkpoint_every_steps, r.checkpoint_every_minutes)
    return extra / (1 + extra)


# -- report ---------------------------------------------------------------------------------------------------------------------
def _fmt(v, spec: str, none: str = 'n/a') -> str:
    return none if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _mem(m: dict) -> str:
    gib = m['peak_bytes'] / 2**30
    return f'{gib:.2f} GiB' if gib >= 1 else f"{m['peak_bytes'] / 2**20:.0f} MiB"


def machine_info(device: torch.device) -> dict:
    info = dict(torch=torch.__version__, python=platform.python_version(), cpu_count=os.cpu_count(),
                cpu=platform.processor() or platform.machine(), default_threads=torch.get_num_threads())
    with contextlib.suppress(OSError):
        names = [l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')]
        if names: info['cpu'] = names[0]
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), capability='.'.join(map(str, torch.cuda.get_device_capability(device))),
                    gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_precision=torch.get_float32_matmul_precision())
    return info


def device_tag(device: torch.device, data: str) -> str:
    if device.type == 'cuda':
        tag = ''.join(c if c.isalnum() else '-' for c in torch.cuda.get_device_name(device).lower())
        tag = '-'.join(t for t in tag.split('-') if t)
    else: tag = f'cpu-{os.cpu_count()}core'
    return tag + ('-synthetic' if data == 'synthetic' else '')


def markdown(res: dict) -> str:
    m, dev = res['machine'], res['device']
    where = (f"{m['gpu']} (compute capability {m['capability']}, {m['gpu_memory_gib']} GiB), CUDA {m['cuda']}"
             if dev.startswith('cuda') else f"CPU: {m['cpu']}, {m['cpu_count']} cores")
    lines = [f"# Training speed: {where}", '',
             f"Command: `{res['command']}`", '',
             f"torch {m['torch']}, python {m['python']}; data: {res['data']}; {res['warmup']} warm-up + {res['steps']} timed "
             f"steps per row; " + (f"overhead from a {res['minutes']:g}-minute `fit` per preset." if res['minutes'] else
             'no overhead fit (--minutes 0).'), '',
             '| preset | precision | threads | busy | batch | ms/step | steps/s | images/s | peak memory | GFLOP/image '
             '| achieved TFLOP/s | MFU | outside steps |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for p in res['presets']:
        ov = p.get('overhead')
        for i, r in enumerate(p['rows']):
            share = _fmt(ov['share_outside_steps'], '.1%') if ov and i == p['overhead_row'] else ''
            lines.append(f"| {p['preset']} | {r['precision']} | {_threads_label(r)} | {r['busy']} | {r['batch']} | "
                         f"{r['ms_per_step']:.1f} | {r['steps_per_s']:.2f} | {r['images_per_s']:.0f} | {_mem(r['memory'])} | "
                         f"{_fmt(r['gflop_per_image'], '.2f')} | {_fmt(r['achieved_tflops'], '.3g')} | "
                         f"{_fmt(r['mfu'], '.1%')} | {share} |")
    ovs = [(p['preset'], p['overhead']) for p in res['presets'] if p.get('overhead')]
    if ovs:
        names = []
        for _, ov in ovs:
            names += [k for k in ov['seconds'] if k not in names]
        lines += ['', 'Where the wall clock of each `fit` went:', '',
                  '| preset | fit wall s | steps done | epochs | stopped | ' + ' | '.join(names) + ' | first step | '
                  'outside steps without the first |',
                  '|---|---:|---:|---:|---|' + '---:|' * (len(names) + 2)]
        for preset, ov in ovs:
            cells = [f"{ov['share'].get(k, 0):.1%} ({ov['seconds'].get(k, 0):.1f} s)" for k in names]
            lines.append(f"| {preset} | {ov['wall_seconds']:.1f} | {ov['steps']} | {ov['epochs_done']} | {ov['stopped']} | "
                         + ' | '.join(cells) + f" | {ov['first_step_seconds']:.1f} s | "
                         f"{_fmt(ov['share_outside_steps_after_first'], '.1%')} |")
    lines += ['', 'Notes:', *[f'- {n}' for n in res['notes']]]
    return '\n'.join(lines) + '\n'


def notes_for(res: dict, device: torch.device) -> list[str]:
    n = []
    rows = [r for p in res['presets'] for r in p['rows']]
    kinds = sorted({r['memory']['kind'] for r in rows})
    n.append('peak memory: ' + '; '.join(kinds) + ('' if device.type == 'cuda' else
             ' (includes the resident training frames, python and torch: not the step alone)'))
    n.append('GFLOP/image: matmul and convolution FLOPs of one whole training step (forward + backward + quantizer '
             f'lookup, LPIPS when on) counted by torch.utils.flop_counter on an uncompiled model at batch <= {FLOP_BATCH}, '
             'divided by the batch; element-wise ops, norms and the optimiser are not counted')
    peaks = sorted({r['peak_note'] for r in rows})
    n.append('MFU = achieved FLOP/s / peak: ' + '; '.join(peaks) +
             ('. The quantizer runs in float32 (quantizer.fp32), so a little of the work cannot reach the low-precision peak'
              if device.type == 'cuda' else ''))
    n.append('ms/step: mean of the timed train_step calls' + (', CUDA synchronised around each' if device.type == 'cuda' else '')
             + '; images/s = batch / (ms/step); batch loading is not in it (it is in "other" of the fit)')
    if any(r['busy'] for r in rows):
        n.append('busy: background processes each spinning one core (python loop) during the timed steps')
    if any(r['steps_in'] == 'fit' for r in rows):
        n.append("threads auto (N): the trainer's own choice, N at the end of the timed steps; those rows run their steps "
                 'inside fit (ended by run.max_steps), where the trainer picks its threads from the load it sees; the other '
                 'rows set run.threads and torch.set_num_threads and call train_step directly')
    if res['minutes']:
        n.append('outside steps = 1 - (time inside train_step) / (wall clock of fit), measured once per preset with no busy '
                 'processes (shown on the row with the fit\'s threads); "other" is everything not in a timed method '
                 '(batch loading, the loop, progress, start and finish); the first step holds the k-means initialisation. '
                 'The share depends on how long the fit runs against the '
                 'preset\'s evaluation and checkpoint cadence: compare runs of the same --minutes. wandb is disabled unless '
                 '--set run.wandb=...')
    for p in res['presets']:
        n += [f"{p['preset']}: {x}" for x in p['notes']]
        ov = p.get('overhead')
        if ov and ov.get('projected_share') is not None:
            n.append(f"{p['preset']}: at its cadence (evaluation every {p['config_cadence']}), a long run spends "
                     f"{ov['projected_share']:.1%} outside steps, projected from this fit's measured step, evaluation and "
                     f"checkpoint times")
        if p['preset'] == 'default' and ov and ov['share_outside_steps'] is not None:
            share = ov['projected_share'] if ov.get('projected_share') is not None else ov['share_outside_steps']
            ok = 'met' if share < 0.10 else 'NOT met'
            n.append(f"default: {ov['share_outside_steps']:.1%} of this {ov['minutes']:g}-minute fit outside optimisation steps, "
                     f"{share:.1%} projected at its cadence (target < 10%: {ok}; data: {res['data']})")
    return n


# -- main -----------------------------------------------------------------------------------------------------------------------
def _ints(s: str) -> list[int]: return [int(x) for x in s.split(',') if x.strip()]


def _threads(s: str) -> list[int | None]:
    "'1,2,auto' -> [1, 2, None] (None: the trainer's own choice)."
    return [None if x.strip() == 'auto' else int(x) for x in s.split(',') if x.strip()]


def _threads_label(r: dict) -> str: return f"auto ({r['threads']})" if r['threads_asked'] == 'auto' else str(r['threads'])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--presets', default=None, help='comma-separated presets (default: cpu,default on a GPU; cpu on the '
                   'CPU, where a default step takes minutes)')
    p.add_argument('--device', default='auto', help="'auto' (the GPU when there is one), 'cpu', 'cuda', ...")
    p.add_argument('--steps', type=int, default=30, help='timed steps per row (default 30)')
    p.add_argument('--warmup', type=int, default=5, help='untimed steps first (default 5; at least 1: k-means init)')
    p.add_argument('--minutes', type=float, default=3.0, help='fit budget for the overhead share per preset (default 3; 0 skips it)')
    p.add_argument('--threads', default=None, help="CPU threads to try, e.g. 1,2,auto ('auto': the trainer's own choice; "
                   "default on the CPU: 1, all cores and auto; on CUDA: auto)")
    p.add_argument('--busy', default=None, help='background busy processes to try, e.g. 0,1 (default 0,1 on the CPU, 0 on CUDA)')
    p.add_argument('--data', choices=['preset', 'synthetic'], default='preset',
                   help="'preset': the preset's frames via data-cache/ (default); 'synthetic': random frames of its size")
    p.add_argument('--set', action='append', default=[], metavar='SECTION.FIELD=VALUE', help='override every preset')
    p.add_argument('--no-flops', action='store_true', help='skip the FLOP count (and MFU)')
    p.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'speed'), help='output folder')
    p.add_argument('--tag', default=None, help='output file name (default: the device tag)')
    args = p.parse_args(argv)
    if args.warmup < 1: p.error('--warmup must be at least 1 (the first step holds the k-means initialisation)')
    if args.steps < 1: p.error('--steps must be at least 1')
    if int(os.environ.get('WORLD_SIZE', '1')) > 1: p.error('run it as one process (not under torchrun)')

    exit_on_signals()

    device = resolve_device(args.device)
    presets = args.presets or ('cpu,default' if device.type == 'cuda' else 'cpu')
    cores = os.cpu_count() or 1
    threads = (_threads(args.threads) if args.threads else [None] if device.type == 'cuda' else [*sorted({1, cores}), None])
    busy = _ints(args.busy) if args.busy else ([0] if device.type == 'cuda' else [0, 1])
    combos = [(t, b) for b in busy for t in threads]
    # the fit runs as training would: the trainer's own thread choice when 'auto' is among the rows, else the most threads
    fit_threads = None if None in threads else max(threads)
    machine = machine_info(device)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
    print(f"device {device}{' (' + machine['gpu'] + ')' if 'gpu' in machine else ''}, {cores} CPU cores, torch {torch.__version__}; "
          f"data {args.data}; rows (threads, busy): {[(t or 'auto', b) for t, b in combos]}; 1-min load average {load:.2f}", flush=True)
    if load > 0.5: print(f'WARNING: the machine is not quiet (load average {load:.2f}): CPU numbers will be low', flush=True)

    res = dict(command='.venv/bin/python benchmarks/bench_speed.py ' + ' '.join(map(shlex.quote, argv)),
               device=str(device), machine=machine, data=args.data, steps=args.steps, warmup=args.warmup,
               minutes=args.minutes, overrides=[*BASE_SETTINGS, *args.set], loadavg_1min_at_start=load,
               started=time.strftime('%Y-%m-%dT%H:%M:%S%z'), presets=[])
    for name in [x.strip() for x in presets.split(',') if x.strip()]:
        cfg, notes = preset_config(name, device, args.set), []
        if cfg.loss.lpips > 0:
            try: build_lpips(cfg.loss.lpips_net, device)
            except LPIPSUnavailable as e:
                notes.append(f'LPIPS dropped (loss.lpips=0) because it cannot run here ({str(e).splitlines()[0][:120]}...): '
                             'with it, the steps from loss.lpips_start on would be slower by its forward and backward')
                print(f'{name}: {notes[-1]}', flush=True)
                cfg = without_lpips(cfg)
            _release(device)
        t = time.perf_counter()
        splits = synthetic_splits(cfg) if args.data == 'synthetic' else load_splits(cfg, progress=True)
        print(f'{name}: {len(splits[0])} train / {len(splits[1])} held-out frames of {cfg.data.width}x{cfg.data.height} '
              f'({args.data}, ready in {time.perf_counter() - t:.1f} s)', flush=True)
        flops_per_image = None
        if not args.no_flops:
            flops, batch = count_step_flops(cfg, splits, device)
            flops_per_image = flops / batch
        rows = []
        for th, b in combos:
            r = add_flops(measure_steps(cfg, splits, device, th, b, args.warmup, args.steps), flops_per_image, device)
            rows.append(r)
            print(f"  threads {_threads_label(r)}, busy {b}: {r['ms_per_step']:.1f} ms/step ({r['steps_per_s']:.2f} steps/s, "
                  f"{r['images_per_s']:.0f} images/s, batch {r['batch']}, {r['precision']}), peak {_mem(r['memory'])}, "
                  f"{_fmt(r['gflop_per_image'], '.2f')} GFLOP/image, MFU {_fmt(r['mfu'], '.1%')}"
                  + (f"; {r['busy_alive_at_end']}/{b} busy processes were alive at the end" if b else ''), flush=True)
        if rows and rows[0]['lpips_in_step']:
            notes.append('the timed steps include LPIPS: they run where its schedule has switched it on, as most of a run does')
        entry = dict(preset=name, config=config_to_dict(cfg), rows=rows, notes=notes, overhead=None, overhead_row=None,
                     config_cadence=f'{cfg.run.eval_every_steps or "-"} steps or {cfg.run.eval_every_minutes or "-"} min, checkpoints '
                                    f'every {cfg.run.checkpoint_every_steps or "-"} steps or {cfg.run.checkpoint_every_minutes or "-"} min')
        if args.minutes > 0:
            print(f"  fit for {args.minutes:g} min with the preset's cadence (threads {fit_threads or 'auto'}, no busy processes) ...", flush=True)
            ov = measure_overhead(cfg, splits, device, fit_threads, args.minutes)
            entry['overhead'] = ov
            entry['overhead_row'] = next((j for j, (th, b) in enumerate(combos) if b == 0 and th == fit_threads), None)
            if entry['overhead_row'] is None and rows: notes.append('no timed row has the fit\'s threads without busy processes')
            print(f"  fit: {ov['steps']} steps, {ov['epochs_done']} epochs in {ov['wall_seconds']:.1f} s; outside steps "
                  f"{_fmt(ov['share_outside_steps'], '.1%')}: " + ', '.join(f'{k} {v:.1%}' for k, v in ov['share'].items())
                  + f"; first step {ov['first_step_seconds']:.1f} s", flush=True)
        res['presets'].append(entry)
        del splits; _release(device)

    res['notes'] = notes_for(res, device)
    res['finished'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or device_tag(device, args.data)
    md = markdown(res)
    (out / f'{tag}.md').write_text(md)
    (out / f'{tag}.json').write_text(json.dumps(res, indent=1, default=str) + '\n')
    print('\n' + md + f'\nwrote {out / tag}.md and .json', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
