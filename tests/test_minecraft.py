"""The Minecraft frame source: it renders headless here, the same seed gives the same frames, actions line up with
frames, the split is by world, the cache is reused, and a machine without OpenGL gets one clear line and Crafter.
Where EGL is missing, GLX on an Xvfb of our own gives the same frames; where venv is missing, pip --target does."""
import configparser, json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from vqvae_kaggle.sources import minecraft as mc, minecraft_runtime as rt
from vqvae_kaggle.config import Config, DataConfig
from vqvae_kaggle.data import load_splits, alt_val_frames
from vqvae_kaggle.sources.base import parse_source

ROOT = Path(__file__).resolve().parents[1]
NO_EGL = {'__EGL_VENDOR_LIBRARY_FILENAMES': '/nonexistent/egl-vendors.json'}   # libglvnd then finds no EGL driver at all
NO_GL = dict(NO_EGL, VQVAE_MINECRAFT_GL='egl')      # and no GLX either: only the EGL route is tried


@pytest.fixture(scope='module', autouse=True)
def game_environment():
    "The game's own environment (created on first use; later runs find it ready)."
    return rt.minecraft_python(progress=False)


def small(tmp_path, **kw) -> Config:
    d = dict(minecraft_train_worlds=2, minecraft_val_worlds=1, frames_per_episode=4, skip_first=6, frame_gap=3,
             width=64, height=36, cache_dir=str(tmp_path / 'cache'), workers=1)
    d.update(kw)
    return Config(data=DataConfig(**d))


def test_renders_first_person_frames_headless(monkeypatch):
    monkeypatch.delenv('DISPLAY', raising=False)              # no X server: EGL pbuffer only
    assert 'llvmpipe' in rt.check_minecraft(progress=False) or rt.check_minecraft(progress=False)
    fs = mc.render_minecraft_episode(11, 12, 64, 36, skip_first=10, frame_gap=4)
    assert fs.frames.shape == (12, 36, 64, 3) and fs.frames.dtype == np.uint8
    assert fs.names == ['minecraft-world-11'] and fs.action_names[-2:] == ['camera_pitch', 'camera_yaw']
    assert all(f.std() > 10 for f in fs.frames), 'no flat (black or grey) frames'
    top = fs.frames[:, :4].reshape(len(fs), -1, 3).mean(1)    # the first rows: sky when looking ahead
    assert (top[:, 2] > top[:, 0]).mean() >= 0.5, 'most frames show a blue/white sky at the top'


def test_same_seed_same_frames_and_actions_in_separate_processes():
    a = mc.render_minecraft_episode(7, 6, 64, 36, skip_first=5, frame_gap=2)
    b = mc.render_minecraft_episode(7, 6, 64, 36, skip_first=5, frame_gap=2)
    c = mc.render_minecraft_episode(8, 6, 64, 36, skip_first=5, frame_gap=2)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert not np.array_equal(a.frames, c.frames)


def test_actions_line_up_with_frames():
    "With a gap of 2, frame i is frame 2i of the gap-1 episode and its action is the two ticks after it combined."
    one = mc.render_minecraft_episode(5, 12, 64, 36, skip_first=8, frame_gap=1)
    two = mc.render_minecraft_episode(5, 6, 64, 36, skip_first=8, frame_gap=2)
    np.testing.assert_array_equal(two.frames, one.frames[::2])
    cam = [two.action_names.index(n) for n in ('camera_pitch', 'camera_yaw')]
    buttons = [i for i in range(len(two.action_names)) if i not in cam]
    pairs = one.actions.reshape(6, 2, -1)
    np.testing.assert_allclose(two.actions[:, cam], pairs[:, :, cam].sum(1), atol=1e-4)
    np.testing.assert_array_equal(two.actions[:, buttons], pairs[:, :, buttons].max(1))
    assert np.abs(one.actions[:, cam]).sum() > 0 and one.actions[:, 0].sum() > 0, 'the explorer turns and walks'


def test_split_by_world_cached_with_actions(tmp_path, monkeypatch):
    calls = []
    render = mc.render_minecraft_episode
    monkeypatch.setattr(mc, 'render_minecraft_episode', lambda seed, *a, **k: calls.append(seed) or render(seed, *a, **k))
    cfg = small(tmp_path)
    train, val = load_splits(cfg, progress=False)
    assert train.names == ['minecraft-world-0', 'minecraft-world-1'] and val.names == ['minecraft-world-10000']
    assert not set(train.names) & set(val.names)
    assert len(train) == 8 and len(val) == 4 and train.actions.shape == (8, 10) and val.actions.shape == (4, 10)
    assert calls == [0, 1, 10000]
    train2, val2 = load_splits(cfg, progress=False)                  # from the cache: nothing rendered again
    assert calls == [0, 1, 10000]
    np.testing.assert_array_equal(train2.frames, train.frames); np.testing.assert_array_equal(train2.actions, train.actions)
    alt = alt_val_frames(cfg, progress=False)                        # the held-out worlds, rendered another way
    assert alt.names == val.names and alt.frames.shape == val.frames.shape and calls[-1] == 10000
    assert not np.array_equal(alt.frames, val.frames)
    diff = np.abs(alt.frames.astype(int) - val.frames).mean()
    assert 0 < diff < 40, f'the same views, another filter (mean difference {diff:.1f} grey levels)'


def test_no_opengl_falls_back_to_crafter_in_one_line(tmp_path, monkeypatch, capsys):
    for k, v in NO_GL.items(): monkeypatch.setenv(k, v)
    with pytest.raises(rt.MinecraftUnavailable, match='headless OpenGL context'):
        rt.check_minecraft(progress=False)
    cfg = small(tmp_path, crafter_train_seeds=1, crafter_val_seeds=1, frames_per_episode=3)
    train, val = load_splits(cfg, progress=False)
    assert train.names == ['crafter-seed-0'] and val.names == ['crafter-seed-10000']
    warning = [l for l in capsys.readouterr().out.splitlines() if 'Minecraft' in l]
    assert len(warning) == 1 and 'cannot be rendered' in warning[0] and "fallback_source='crafter'" in warning[0]
    assert 'Fix: install the OpenGL libraries' in warning[0]
    assert not list((tmp_path / 'cache').glob('minecraft-*')), 'nothing half-rendered is left behind'
    with pytest.raises(rt.MinecraftUnavailable, match='apt-get install libegl1'):
        load_splits(small(tmp_path, fallback_source=None), progress=False)


def test_cached_minecraft_frames_need_no_opengl(tmp_path, monkeypatch):
    cfg = small(tmp_path, minecraft_train_worlds=1, frames_per_episode=2)
    train, _ = load_splits(cfg, progress=False)
    for k, v in NO_GL.items(): monkeypatch.setenv(k, v)
    again, _ = load_splits(cfg, progress=False)                      # a finished cache is used as it is
    np.testing.assert_array_equal(again.frames, train.frames)


def test_missing_game_interpreter_is_named(monkeypatch):
    monkeypatch.setenv('VQVAE_MINECRAFT_PYTHON', '/nonexistent/bin/python')
    with pytest.raises(rt.MinecraftUnavailable, match='VQVAE_MINECRAFT_PYTHON=/nonexistent/bin/python does not exist'):
        mc.render_minecraft_episode(0, 1)


def test_the_package_never_pins_the_games_dependencies():
    "Installing vqvae-kaggle must not downgrade numpy or pin pyglet: the game's packages live only in its own environment."
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    reqs = cfg['DEFAULT']['requirements'].split()
    assert not [r for r in reqs if r.startswith(('pyglet', 'minecraft', 'nbtlib'))]
    assert [r for r in reqs if r.startswith('numpy')] == ['numpy>=1.24']
    assert 'numpy==1.26.4' in rt.MINECRAFT_PACKAGES and all('numpy==1.26.4' in rt.game_packages(v) for v in rt.GAME_RELEASES)
    import numpy
    assert int(numpy.__version__.split('.')[0]) >= 2, 'the project environment keeps numpy 2'


def test_glx_on_xvfb_gives_the_egl_frames(tmp_path, monkeypatch):
    "Without EGL the game draws through GLX on an Xvfb started here, and the frames are the EGL route's, byte for byte."
    if not shutil.which('Xvfb'):
        pytest.skip('no Xvfb on PATH (apt-get install xvfb; tools/test.sh installs it where it can): GLX route untested')
    monkeypatch.delenv(rt._ROUTE_VAR, raising=False)               # restored afterwards: the route found here stays here
    monkeypatch.setenv('VQVAE_MINECRAFT_GL', 'egl')
    egl = mc.render_minecraft_episode(3, 4, 64, 36, skip_first=5, frame_gap=2)
    monkeypatch.delenv('VQVAE_MINECRAFT_GL')
    for k, v in NO_EGL.items(): monkeypatch.setenv(k, v)
    assert 'llvmpipe' in rt.check_minecraft(progress=False)
    route = rt.gl_route()
    assert route['gl'] == 'glx' and route['display'] == rt._XVFB['display'] and rt._XVFB['proc'].poll() is None
    glx = mc.render_minecraft_episode(3, 4, 64, 36, skip_first=5, frame_gap=2)
    np.testing.assert_array_equal(glx.frames, egl.frames); np.testing.assert_array_equal(glx.actions, egl.actions)
    assert rt.start_xvfb() == route['display'], 'one Xvfb per process'
    cfg = small(tmp_path, minecraft_train_worlds=1, minecraft_val_worlds=1, frames_per_episode=2, workers=2)
    train, val = load_splits(cfg, progress=False)                 # render workers take the route (and the display) found here
    assert train.names == ['minecraft-world-0'] and val.names == ['minecraft-world-10000'] and train.frames.std() > 10
    proc = rt._XVFB['proc']; rt._stop_xvfb()
    assert proc.poll() is not None and not rt._XVFB


def test_no_egl_no_xvfb_names_every_step(monkeypatch):
    "EGL fails, no Xvfb, apt-get not allowed: one error naming each step and the fix; allowed (as root): EGL is installed and tried again."
    monkeypatch.delenv('VQVAE_MINECRAFT_GL', raising=False); monkeypatch.delenv('KAGGLE_KERNEL_RUN_TYPE', raising=False)
    monkeypatch.setenv('VQVAE_MINECRAFT_APT', '0'); monkeypatch.delenv(rt._ROUTE_VAR, raising=False)
    tried = []
    def check(gl, display=None, progress=False):
        tried.append(gl)
        if 'installed' not in tried: raise rt.MinecraftUnavailable('opening an OpenGL context (EGL) failed (exit code 1):\nno EGL')
        return 'llvmpipe (after apt-get)'
    monkeypatch.setattr(rt, '_check', check)
    monkeypatch.setattr(rt.shutil, 'which', lambda name, *a, **k: None if name == 'Xvfb' else '/usr/bin/' + name)
    with pytest.raises(rt.MinecraftUnavailable) as e:
        rt.gl_route(refresh=True)
    assert 'no EGL' in str(e.value) and 'no Xvfb on PATH' in str(e.value) and 'VQVAE_MINECRAFT_APT=1' in str(e.value)
    assert 'Fix: install the OpenGL libraries' in str(e.value)
    monkeypatch.setattr(rt, '_apt_install_egl', lambda progress: tried.append('installed'))
    monkeypatch.setattr(rt.os, 'geteuid', lambda: 0)
    monkeypatch.setenv('VQVAE_MINECRAFT_APT', '1')
    route = rt.gl_route(refresh=True)
    assert route['gl'] == 'egl' and route['renderer'] == 'llvmpipe (after apt-get)' and tried[-2:] == ['installed', 'egl']


def test_interpreter_from_path_when_the_running_one_has_no_wheels(tmp_path, monkeypatch):
    "A 3.13 kernel: python3.12 on PATH is a shim that does not run, python3.11 works: the game gets 3.11; nothing fits: every fix named."
    (tmp_path / 'python3.12').write_text('#!/bin/sh\necho "pyenv: python3.12: command not found" >&2; exit 127\n')
    (tmp_path / 'python3.12').chmod(0o755)
    real = Path(sys.executable)
    monkeypatch.setenv('PATH', str(tmp_path))
    if sys.version_info[:2] in rt.GAME_RELEASES:
        (tmp_path / f'python{sys.version_info[0]}.{sys.version_info[1]}').symlink_to(real)
        py, version = rt.game_interpreter(('/opt/python3.13/bin/python', (3, 13)))
        assert py == tmp_path / f'python{sys.version_info[0]}.{sys.version_info[1]}' and version == sys.version_info[:2]
        (tmp_path / f'python{sys.version_info[0]}.{sys.version_info[1]}').unlink()
        rt._find_interpreter.cache_clear()                          # found once per process and PATH, normally
    with pytest.raises(rt.MinecraftUnavailable) as e:
        rt.game_interpreter(('/opt/python3.13/bin/python', (3, 13)))
    msg = str(e.value)
    assert 'wheels for Python 3.10, 3.11, 3.12' in msg and '/opt/python3.13/bin/python (3.13, running)' in msg
    assert f'{tmp_path}/python3.12 (does not run)' in msg and 'vqvae-kaggle frames publish' in msg


def test_venv_failure_falls_back_to_pip_target(tmp_path, monkeypatch):
    "Where `python -m venv` fails (no ensurepip), the environment is made with pip --target in a folder of its own."
    monkeypatch.delenv('VQVAE_MINECRAFT_ENV', raising=False); monkeypatch.delenv('VQVAE_MINECRAFT_INSTALL', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    cmds = []
    def run(cmd, what, timeout=900, env=None):
        cmds.append([str(c) for c in cmd])
        if cmd[1:3] == ['-m', 'venv']: raise rt.MinecraftUnavailable(f'{what} failed (exit code 1):\nensurepip is not available')
        return ''
    monkeypatch.setattr(rt, '_run', run)
    env = rt._game_env(progress=False)
    assert env['method'] == 'target' and [c[1:3] for c in cmds[:2]] == [['-m', 'venv'], ['-m', 'pip']]
    assert '--target' in cmds[1] and cmds[2][1:4] == ['-I', '-S', '-c']          # installed, then imported with -S
    stamp = json.loads((rt.minecraft_env_dir(env['version'], 'target') / '.vqvae-kaggle-ready').read_text())
    assert stamp['method'] == 'target' and stamp['packages'] == list(rt.game_packages(env['version']))
    assert not rt.minecraft_env_dir(env['version'], 'venv').exists(), 'the half-made venv is removed'
    assert rt.minecraft_env_dir(env['version'], 'venv') != rt.minecraft_env_dir(env['version'], 'target')


def test_pip_target_environment_renders_the_same_frames(tmp_path, monkeypatch):
    "The target route for real (installs from PyPI or PIP_FIND_LINKS, ~30-70 s): the game runs with -S and gives the venv's frames."
    venv = mc.render_minecraft_episode(2, 3, 64, 36, skip_first=4, frame_gap=2)
    monkeypatch.setenv('VQVAE_MINECRAFT_ENV', str(tmp_path / 'env')); monkeypatch.setenv('VQVAE_MINECRAFT_INSTALL', 'target')
    cmd = rt.minecraft_command(progress=False)
    assert cmd[1:4] == ['-I', '-S', '-c'] and cmd[-1] == str(tmp_path / 'env' / 'site')
    out = subprocess.run([*cmd, '-c', 'import sys, numpy; print(numpy.__version__, "site-packages" in " ".join(sys.path))'],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ['1.26.4', 'False'], 'the game sees its own numpy and no other site-packages'
    target = mc.render_minecraft_episode(2, 3, 64, 36, skip_first=4, frame_gap=2)
    np.testing.assert_array_equal(target.frames, venv.frames)


def test_the_source_keeps_the_cache_keys_of_the_data_module():
    "parse_source('minecraft') plans the cache entry data.rendered_plan planned: the same label, parameters and tasks, so caches are reused."
    game = parse_source('minecraft')
    assert game.game == 'minecraft' and game.renders and game.actions.startswith('buttons OR-ed and camera deltas summed')
    assert game.episode_world('minecraft-world-10003') == 10003 and game.episode_world('crafter-seed-3') is None
    assert any('minecraft-python==' in r for r in game.requires())
    d = DataConfig(minecraft_train_worlds=2, minecraft_val_worlds=1, frames_per_episode=5, skip_first=3, frame_gap=2, width=64, height=36)
    task = lambda s, split, **render: dict(kind='minecraft', seed=s, split=split, frames=5, skip_first=3, frame_gap=2, width=64,
                                           height=36, **render)
    label, params, _ = game.plan(d)
    assert label == 'minecraft-64x36' and params == dict(
        source='minecraft', game=rt.game_fingerprint(), policy=mc.MINECRAFT_POLICY,
        tasks=[task(0, 'train', render_scale=2, resample='area'), task(1, 'train', render_scale=2, resample='area'),
               task(10000, 'val', render_scale=2, resample='area')])
    label, params, _ = game.plan(d, alt=True)
    assert label == 'minecraft-alt-64x36' and params['tasks'] == [task(10000, 'val', render_scale=3, resample='lanczos')]


def test_the_game_script_loads_its_files_by_path_in_the_games_interpreter(tmp_path):
    "The game's interpreter runs isolated: the script finds minecraft_world.py and the package's shared.py by their paths."
    assert [f.name for f in rt.GAME_FILES] == ['minecraft_game.py', 'minecraft_world.py'] and all(f.is_file() for f in rt.GAME_FILES)
    p = subprocess.run([*rt.minecraft_command(progress=False), str(rt.GAME_SCRIPT), '--help'], capture_output=True, text=True)
    assert p.returncode == 0 and '--world-type {inland,island,floating,flat}' in p.stdout, p.stderr
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('shared', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.atomic_write(sys.argv[2], b'ok')")
    out = tmp_path / 'written'
    subprocess.run([sys.executable, '-I', '-S', '-c', code, str(ROOT / 'vqvae_kaggle' / 'shared.py'), str(out)], check=True)
    assert out.read_bytes() == b'ok'                                   # shared.py needs only the standard library
