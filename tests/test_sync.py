"""The check that the package is exactly what the notebooks export (tools/check_sync.sh, run by tools/test.sh) is
itself tested: it exports into an empty folder, so a module no notebook exports (an orphan) fails it, as does an
exported module edited by hand. The check runs with the nbdev of the interpreter running pytest (whatever environment
that is, not only .venv), and says what to install when that nbdev is missing."""
import os, shutil, subprocess, sys, sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    dest.mkdir()
    shutil.copy(REPO / 'settings.ini', dest)
    shutil.copytree(REPO / 'nbs', dest / 'nbs')
    shutil.copytree(REPO / 'vqvae_kaggle', dest / 'vqvae_kaggle', ignore=shutil.ignore_patterns('__pycache__'))
    return dest


def nbdev_bin() -> Path:
    """The folder where pip put nbdev_export and nbdev_clean for the interpreter running this test: its scripts folder
    (a venv's bin/), else the interpreter's own folder (not resolved: a venv's python links to the base interpreter,
    whose folder holds no nbdev), else the user scheme's (pip install --user). None has them: the first, and the check
    says what to install."""
    dirs = [sysconfig.get_path('scripts'), Path(sys.executable).parent, sysconfig.get_path('scripts', f'{os.name}_user')]
    return next((Path(d) for d in dirs if (Path(d) / 'nbdev_export').is_file()), Path(dirs[0]))


BIN = nbdev_bin()


def check(repo: Path, bin_dir: Path = BIN, **env):
    return subprocess.run(['bash', str(REPO / 'tools' / 'check_sync.sh'), str(repo)], capture_output=True, text=True,
                          env={**os.environ, 'NBDEV_BIN': str(bin_dir), **env})


def test_sync_check_passes_on_the_repository_and_fails_on_an_orphan_or_a_hand_edit(tmp_path):
    repo = copy_repo(tmp_path / 'repo')
    ok = check(repo)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (repo / 'vqvae_kaggle' / 'orphan.py').write_text('"A module that no notebook exports."\nx = 1\n')
    r = check(repo)
    assert r.returncode == 1 and 'Only in' in r.stdout and 'orphan.py' in r.stdout
    (repo / 'vqvae_kaggle' / 'orphan.py').unlink()
    cfg = repo / 'vqvae_kaggle' / 'config.py'
    cfg.write_text(cfg.read_text() + '\n# edited by hand\n')
    r = check(repo)
    assert r.returncode == 1 and 'edited by hand' in r.stdout


def test_sync_check_without_nbdev_says_what_to_install(tmp_path):
    "An environment without the dev tools: a clear message naming the install, not a bash 'No such file or directory'."
    repo = copy_repo(tmp_path / 'repo')
    for r in [check(repo, tmp_path / 'empty-bin'),                                          # NBDEV_BIN names a folder without nbdev
              subprocess.run(['bash', str(REPO / 'tools' / 'check_sync.sh'), str(repo)], capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k != 'NBDEV_BIN'} | {'PATH': '/usr/bin:/bin'})]:
        assert r.returncode == 2, r.stdout + r.stderr
        assert 'nbdev_export not found' in r.stderr and 'pip install -e ".[dev]"' in r.stderr, r.stderr
