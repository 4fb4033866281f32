"""The check that the package is exactly what the notebooks export (tools/check_sync.sh, run by tools/test.sh) is
itself tested: it exports into an empty folder, so a module no notebook exports (an orphan) fails it, as does an
exported module edited by hand."""
import shutil, subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    dest.mkdir()
    shutil.copy(REPO / 'settings.ini', dest)
    shutil.copytree(REPO / 'nbs', dest / 'nbs')
    shutil.copytree(REPO / 'vqvae_kaggle', dest / 'vqvae_kaggle', ignore=shutil.ignore_patterns('__pycache__'))
    return dest


def check(repo: Path):
    return subprocess.run(['bash', str(REPO / 'tools' / 'check_sync.sh'), str(repo)], capture_output=True, text=True)


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
