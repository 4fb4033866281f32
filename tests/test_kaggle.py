"""Kernel metadata validation, the package wheel, and push / status / output / chain / the `kernel` CLI over a fake
Kaggle client, including every error: missing credentials, no network, quota exhausted, a failed session."""
import argparse, json, os, subprocess, sys, types, zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from vqvae_kaggle import kaggle as vk, kaggle_client as kc, kaggle_push as kp, kaggle_chain as kch

REPO = Path(__file__).resolve().parents[1]
KID = json.loads((REPO / 'kernel-metadata.json').read_text())['id']


# -- a fake Kaggle ---------------------------------------------------------------------------------------------------

def http_error(status: int, text='refused'):
    r = requests.Response(); r.status_code = status
    return requests.exceptions.HTTPError(f'{status} {text}', response=r)


class FakeKaggle:
    """Kaggle's servers, scripted, behind the real client's interface: `fake.kernels_push(...)` etc. are methods of an
    autospec of the installed `KaggleApi`, so a call with a name or keyword the real client lacks fails (TypeError,
    AttributeError) before the scripted server (`_kernels_push` ...) sees it. Push n creates version n, whose statuses are
    served in turn (the last one repeats); `reject(meta)` may return an error string for a push, `refuse_self` lists the
    kernel itself as an invalid kernel source (with `refuse_creates` a version or not); `raises[method]` lists exceptions
    the next calls raise; `quota` is a list of (used, total) hours served in turn by quota_view; `versions=False` is a
    client whose status requests cannot name a version. Each version's summary.json names the SESSION_TOKEN injected into
    its notebook (`tokens=False`: a front end that writes none) and holds `data(v)` as its "data" entry when given; like
    Kaggle's, the output has summary.json only once a status request has seen the version finished.
    `ignores_versions=True` is a server that answers 'owner/slug/N' about the newest version it knows, and after each push
    it knows the new version only after `stale_polls` status requests (till then: the previous version's last status and
    output), what kaggle < 2.2.5 gets (it parses the version and drops it)."""

    def __init__(self, statuses=None, default=('QUEUED', 'RUNNING', 'COMPLETE'), reject=None, raises=None, quota=None,
                 failure='Notebook failed: exit code 1', summary=True, refuse_self=False, refuse_creates=True, versions=True,
                 api_class=None, tokens=True, data=None, ignores_versions=False, stale_polls=0):
        from unittest import mock
        from kaggle.api.kaggle_api_extended import KaggleApi
        self.statuses, self.default, self.reject = statuses or {}, default, reject or (lambda meta: None)
        self.raises, self.quota, self.failure, self.summary = raises or {}, quota, failure, summary
        self.refuse_self, self.refuse_creates, self.reads_versions = refuse_self, refuse_creates, versions
        self.pushes, self.calls, self._left, self.refused = [], [], {}, 0
        self.tokens, self.data, self.ignores_versions, self.stale_polls, self._stale = tokens, data, ignores_versions, stale_polls, {}
        self._finished = set()
        self.api = mock.create_autospec(api_class or KaggleApi, instance=True, spec_set=True)
        for name in ('kernels_push', 'kernels_status', 'kernels_output', 'quota_view', 'parse_kernel_string'):
            getattr(self.api, name).side_effect = getattr(self, '_' + name)

    def __getattr__(self, name):          # only reached for names this class lacks: the client's interface
        if (name.startswith('_') and name != '_spec_class') or name == 'api': raise AttributeError(name)
        return getattr(self.api, name)

    def _parse_kernel_string(self, kernel):
        parts = kernel.split('/')
        return (parts[0], parts[1], parts[2]) if self.reads_versions and len(parts) > 2 else (parts[0], parts[1])

    def _call(self, name, *args):
        self.calls.append((name, args))
        if self.raises.get(name): raise self.raises[name].pop(0)

    def _kernels_push(self, folder, timeout=None, acc=None, no_run=False):
        self._call('kernels_push', folder)
        meta = json.loads((Path(folder) / 'kernel-metadata.json').read_text())
        nb = json.loads((Path(folder) / meta['code_file']).read_text())
        error = self.reject(meta)
        if error: return types.SimpleNamespace(error=error, url='', version_number=None, ref='', invalid_kernel_sources=[])
        if self.refuse_self and meta['id'] in meta['kernel_sources']:   # Kaggle's invalidKernelSources in a successful response
            self.refused += 1
            if not self.refuse_creates:
                return types.SimpleNamespace(error=None, url='', version_number=None, ref='', invalid_kernel_sources=[meta['id']])
        self.pushes.append(dict(meta=meta, nb=nb, acc=acc, timeout=timeout, no_run=no_run, token=injected(nb).get('SESSION_TOKEN')))
        v = len(self.pushes)
        self._left[v], self._stale[v] = list(self.statuses.get(v, self.default)), self.stale_polls if v > 1 else 0
        return types.SimpleNamespace(error=None, url=f'https://www.kaggle.com/code/{meta["id"]}?scriptVersionId={1000 + v}',
                                     version_number=v, ref=f'/code/{meta["id"]}',
                                     invalid_kernel_sources=[meta['id']] if self.refuse_self and meta['id'] in meta['kernel_sources'] else [],
                                     invalid_dataset_sources=['ghost/dataset'] if 'ghost/dataset' in meta['dataset_sources'] else [])

    def _version(self, kernel):
        parts, newest = kernel.split('/'), len(self.pushes)
        if len(parts) == 3 and not self.ignores_versions: return int(parts[2])
        return newest - 1 if self._stale.get(newest) else newest     # the new version is not known yet

    def _kernels_status(self, kernel):
        self._call('kernels_status', kernel)
        v = self._version(kernel)
        if v < len(self.pushes) and self._stale.get(v + 1):           # the previous version's last status
            self._stale[v + 1] -= 1
            return types.SimpleNamespace(status=types.SimpleNamespace(name=self._left[v][-1]), failure_message=None)
        todo = self._left[v]
        s = todo.pop(0) if len(todo) > 1 else todo[0]
        if s in kch.TERMINAL_STATUSES: self._finished.add(v)
        enum = types.SimpleNamespace(name=s)          # kaggle 2.2.5 returns a KernelWorkerStatus enum
        return types.SimpleNamespace(status=enum, failure_message=self.failure if s == 'ERROR' else None)

    def _kernels_output(self, kernel, path, file_pattern=None, force=False, quiet=True):
        self._call('kernels_output', kernel, file_pattern)
        v, files = self._version(kernel), []
        if self.summary and v in self._finished:
            s = Path(path) / 'cpu' / 'summary.json'; s.parent.mkdir(parents=True, exist_ok=True)
            summary = dict(stopped='deadline', step=1000 * v, epochs_done=3 * v, val=dict(psnr=25.0 + v))
            token = self.pushes[v - 1].get('token') if 0 < v <= len(self.pushes) else None
            if self.tokens and token: summary['session_token'] = token
            if self.data: summary['data'] = self.data(v)
            s.write_text(json.dumps(summary))
            files.append(str(s))
        log = Path(path) / f"{kernel.split('/')[1]}.log"
        lines = [{'stream_name': 'stdout', 'time': float(i), 'data': f'step {i}\n'} for i in range(50)]
        lines.append({'stream_name': 'stderr', 'time': 51.0, 'data': 'STOPPED: LPIPS (alex) needs alexnet-owt-7be5be79.pth\n'})
        log.write_text(json.dumps(lines))
        return files + [str(log)], None

    def _quota_view(self):
        self._call('quota_view')
        if self.quota is None: return types.SimpleNamespace(gpu_quota=None, tpu_quota=None, quota_refresh_time=None)
        used, total = self.quota.pop(0) if len(self.quota) > 1 else self.quota[0]
        q = types.SimpleNamespace(time_used=timedelta(hours=used), total_time_allowed=timedelta(hours=total))
        return types.SimpleNamespace(gpu_quota=q, tpu_quota=None, quota_refresh_time=None)


def quiet(*a): pass


def injected(nb):
    "The injected parameters of a pushed notebook, as a dict."
    src = kp.cell_source(nb['cells'][kp.parameters_cell(nb) + 1])
    ns = {}
    exec(src, ns)
    return {k: v for k, v in ns.items() if not k.startswith('__')}


# -- metadata ----------------------------------------------------------------------------------------------------------

def test_repository_metadata_is_valid_and_explicit():
    meta = kp.validate_metadata(REPO)
    assert meta['code_file'] == 'kernel/train.ipynb' and (REPO / meta['code_file']).is_file()
    assert (meta['language'], meta['kernel_type'], meta['machine_shape']) == ('python', 'notebook', 'NvidiaTeslaT4')
    for k in ('is_private', 'enable_gpu', 'enable_internet'): assert meta[k] is True
    for k in ('dataset_sources', 'kernel_sources', 'competition_sources', 'model_sources'): assert meta[k] == []
    assert kp.slugify(meta['title']) == meta['id'].split('/')[1]


def test_parameters_cell_is_tagged_for_papermill():
    """Kaggle runs notebooks with papermill, which injects after the cell tagged 'parameters' (else at the top, where the
    notebook's own defaults would then override every injected value)."""
    nb = json.loads((REPO / 'kernel' / 'train.ipynb').read_text())
    assert 'parameters' in nb['cells'][kp.parameters_cell(nb)]['metadata'].get('tags', [])


def test_notebook_parameters_cover_every_cli_option():
    "The CLI only sets parameters the front end defines (the contract between `kernel push` and kernel/train.ipynb)."
    nb = json.loads((REPO / 'kernel' / 'train.ipynb').read_text())
    names = set(kp.parameter_names(nb))
    set_by_cli = set(kch.CLI_PARAMETERS.values()) | {'OVERRIDES', 'FRESH', 'LPIPS_DOWNLOAD', 'PREVIOUS_OUTPUT', 'REQUIRE_PREVIOUS', 'PACKAGE_WHEEL'}
    set_by_cli |= set(kp.SESSION_PARAMETERS)           # SESSION_TOKEN, TIMEOUT_SECONDS, QUOTA_HOURS_LEFT
    assert set_by_cli <= names, set_by_cli - names


def good_meta():
    return json.loads((REPO / 'kernel-metadata.json').read_text())

BAD = [
    (dict(id='no-slash'), "id 'no-slash' must be 'username/kernel-slug'"),
    (dict(id='me/a/b'), "must be 'username/kernel-slug'"),
    (dict(id='me/Upper_Case'), "the slug 'Upper_Case' must be 5-50 lower-case letters"),
    (dict(id='me/abc'), "the slug 'abc' must be 5-50"),
    (dict(id='me/' + 'x' * 51), 'must be 5-50'),
    (dict(id='m e/vqvae-kaggle-train'), "'m e' is not a Kaggle username"),
    (dict(title='abc'), "title 'abc' must be at least 5 characters"),
    (dict(code_file='kernel/nope.ipynb'), "code_file 'kernel/nope.ipynb' not found relative to the metadata file"),
    (dict(code_file='settings.ini'), 'kernel_type notebook needs an .ipynb code_file'),
    (dict(language='r'), "language must be 'python'"),
    (dict(kernel_type='book'), "kernel_type must be 'notebook' or 'script'"),
    (dict(enable_internet='yes'), "enable_internet must be true or false, got 'yes'"),   # 'true'/'false' strings are accepted
    (dict(is_private=1), 'is_private must be true or false'),
    (dict(enable_tpu=True), 'enable_gpu and enable_tpu cannot both be true'),
    (dict(dataset_sources='me/data'), "dataset_sources must be a list"),
    (dict(dataset_sources=['data-only']), "dataset_sources: ['data-only'] not of the form 'owner/dataset-slug[/version]'"),
    (dict(dataset_sources=['me/data', 'me/data']), "dataset_sources: ['me/data'] listed more than once"),
    (dict(kernel_sources=['me/abc']), "kernel_sources: ['me/abc'] not of the form"),
    (dict(competition_sources=['owner/comp']), "competition_sources: ['owner/comp'] not of the form 'competition-slug'"),
    (dict(model_sources=['me/model/pytorch/default']), "model_sources: ['me/model/pytorch/default'] not of the form"),
    (dict(machine_shape='NvidiaK80'), "machine_shape 'NvidiaK80' is not a known accelerator"),
    (dict(enable_gpu=False), "machine_shape 'NvidiaTeslaT4' is a GPU but enable_gpu is False"),
    (dict(machine_shape='TpuV5E8'), "machine_shape 'TpuV5E8' is a TPU but enable_tpu is False"),
    (dict(enable_internt=True), "unknown key(s) ['enable_internt']"),
]

WARN = [   # what the official client only warns about (or fills with its default): warnings here too
    (dict(title='Something Else'), "title 'Something Else' has the slug 'something-else', not the id slug 'vqvae-kaggle-train'"),
    (dict(machine_shape=None), 'enable_gpu is true but machine_shape is not set: Kaggle picks its default GPU'),
    (dict(machine_shape=''), 'enable_gpu is true but machine_shape is not set: Kaggle picks its default GPU'),
    (dict(machine_shape='NvidiaTeslaT4Highmem'), "machine_shape 'NvidiaTeslaT4Highmem' is admin-only, for Kaggle's administrators only"),
    (dict(machine_shape='NvidiaTeslaP100'), "machine_shape 'NvidiaTeslaP100' is retired: sessions run on NvidiaTeslaT4"),
]


@pytest.mark.parametrize('change,message', WARN, ids=[m[:40] for _, m in WARN])
def test_metadata_warnings_do_not_stop_a_push(change, message, capsys):
    kp.validate_metadata({**good_meta(), **change}, REPO)
    assert message in capsys.readouterr().out


@pytest.mark.parametrize('change,message', BAD, ids=[m[:40] for _, m in BAD])
def test_metadata_errors_are_clear(change, message):
    meta = {**good_meta(), **change}
    with pytest.raises(kp.MetadataError) as e: kp.validate_metadata(meta, REPO)
    assert message in str(e.value)


@pytest.mark.parametrize('key', ['enable_internet', 'enable_gpu', 'is_private', 'dataset_sources', 'kernel_sources', 'model_sources'])
def test_metadata_switches_and_sources_must_be_explicit(key):
    meta = {k: v for k, v in good_meta().items() if k != key}
    with pytest.raises(kp.MetadataError, match=rf"missing key\(s\) \['{key}'\]"): kp.validate_metadata(meta, REPO)


def test_metadata_reports_every_problem_at_once_and_accepts_good_variants(capsys):
    meta = {**good_meta(), 'language': 'r', 'enable_internet': None, 'dataset_sources': ['x']}
    with pytest.raises(kp.MetadataError) as e: kp.validate_metadata(meta, REPO)
    assert str(e.value).count('\n  - ') == 3
    ok = [dict(enable_internet=False), dict(enable_gpu=False, machine_shape=None),
          dict(enable_gpu=False, enable_tpu=True, machine_shape='TpuV6E8'),
          dict(dataset_sources=['me/frames', 'me/weights/3'], kernel_sources=['me/vqvae-kaggle-train', 'me/other-kernel/7'],
               competition_sources=['some-competition'], model_sources=['me/model/pytorch/default/1'])]
    for change in ok: kp.validate_metadata({**good_meta(), **change}, REPO)
    kp.validate_metadata({**good_meta(), 'machine_shape': 'NvidiaTeslaP100'}, REPO)
    assert 'retired' in capsys.readouterr().out


def test_metadata_file_errors(tmp_path):
    with pytest.raises(kp.MetadataError, match='kernel metadata not found'): kp.validate_metadata(tmp_path)
    (tmp_path / 'kernel-metadata.json').write_text('{"id": ')
    with pytest.raises(kp.MetadataError, match='is not valid JSON'): kp.validate_metadata(tmp_path)


@pytest.mark.parametrize('title', ['vqvae-kaggle-train', 'VQ-VAE Kaggle: Train!', "Don't  stop -- me now", 'Café crème 2,000',
                                   'a_b.c/d', '  --Leading and trailing--  ', 'UPPER 123 lower'])
def test_slugify_agrees_with_the_kaggle_clients_slugify(title):
    slugify = pytest.importorskip('slugify').slugify   # python-slugify, what the kaggle client uses
    assert kp.slugify(title) == slugify(title)


# -- the package at the pushed version ---------------------------------------------------------------------------------

def test_pushed_wheel_installs_and_imports_the_exact_files(tmp_path):
    staged = kp.stage_kernel(REPO, tmp_path / 'stage', {'PRESET': 'cpu'})
    wheel_param = injected(json.loads((staged / 'train.ipynb').read_text()))['PACKAGE_WHEEL']
    version = kp.package_version(REPO / 'vqvae_kaggle')
    assert wheel_param['version'] == version and wheel_param['name'] == f'vqvae_kaggle-{version}-py3-none-any.whl'
    wheel = tmp_path / wheel_param['name']
    import base64, hashlib
    wheel.write_bytes(base64.b64decode(wheel_param['b64']))
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == wheel_param['sha256']
    assert not (staged / 'wheel').exists() and sorted(p.name for p in staged.iterdir()) == ['kernel-metadata.json', 'train.ipynb']
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-index', '--target', str(site), str(wheel)],
                   check=True)
    code = ('import sys; sys.path.insert(0, sys.argv[1]); from importlib.metadata import version; import vqvae_kaggle.kaggle as vk; '
            'print(version("vqvae-kaggle")); print(vk.check_package(sys.argv[2]))')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, '-c', code, str(site), version], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [version, f'vqvae-kaggle {version} from {site / "vqvae_kaggle"}']
    assert (site / 'bin' / 'vqvae-kaggle').is_file()                      # the console script came along


def test_package_version_changes_with_any_file(tmp_path):
    import shutil
    pkg = tmp_path / 'vqvae_kaggle'
    shutil.copytree(REPO / 'vqvae_kaggle', pkg, ignore=shutil.ignore_patterns('__pycache__'))
    v1 = kp.package_version(pkg)
    assert v1 == kp.package_version(REPO / 'vqvae_kaggle')
    (pkg / 'cli.py').write_text((pkg / 'cli.py').read_text() + '\n# changed\n')
    assert kp.package_version(pkg) != v1 and kp.package_version(pkg).split('+')[0] == v1.split('+')[0]


def test_the_wheel_carries_subpackages_and_script_files(tmp_path):
    "Every .py below the package, at any depth: a subpackage, and a script file no module imports (run as a script in the kernel)."
    pkg = tmp_path / 'vqvae_kaggle'
    (pkg / 'sources' / '__pycache__').mkdir(parents=True)
    (pkg / '__init__.py').write_text("__version__ = '0.1.0'\n")
    for f in ('sources/__init__.py', 'sources/crafter.py', 'sources/minecraft_game.py'): (pkg / f).write_text(f'# {f}\n')
    (pkg / 'sources' / '__pycache__' / 'crafter.cpython-311.pyc').write_bytes(b'')
    with zipfile.ZipFile(kp.build_wheel(pkg, tmp_path / 'out')) as z:
        names = z.namelist()
        assert sorted(n for n in names if n.endswith('.py')) == ['vqvae_kaggle/__init__.py', 'vqvae_kaggle/sources/__init__.py',
                                                                 'vqvae_kaggle/sources/crafter.py', 'vqvae_kaggle/sources/minecraft_game.py']
        assert z.read('vqvae_kaggle/sources/minecraft_game.py') == b'# sources/minecraft_game.py\n'
        record = z.read(next(n for n in names if n.endswith('/RECORD'))).decode()
    assert 'vqvae_kaggle/sources/minecraft_game.py,sha256=' in record

def test_staging_leaves_the_repository_alone_and_injects_once(tmp_path):
    before = (REPO / 'kernel' / 'train.ipynb').read_bytes(), (REPO / 'kernel-metadata.json').read_bytes()
    staged = kp.stage_kernel(REPO, tmp_path / 'a', {'PRESET': 'cpu', 'OVERRIDES': ['optim.lr=3e-4'], 'FRESH': True}, package=False)
    assert ((REPO / 'kernel' / 'train.ipynb').read_bytes(), (REPO / 'kernel-metadata.json').read_bytes()) == before
    nb = json.loads((staged / 'train.ipynb').read_text())
    assert injected(nb) == {'PRESET': 'cpu', 'OVERRIDES': ['optim.lr=3e-4'], 'FRESH': True}
    again = kp.inject_parameters(nb, {'PRESET': 'default'})               # re-staging replaces the injected cell
    assert len(again['cells']) == len(nb['cells']) and injected(again) == {'PRESET': 'default'}
    with pytest.raises(ValueError, match='not a plain Python literal'): kp.inject_parameters(nb, {'PRESET': object()})


# -- credentials and the real client, offline ------------------------------------------------------------------------

def test_missing_credentials_are_reported_before_importing_kaggle(tmp_path):
    code = ('import sys, vqvae_kaggle.kaggle_client as kc\ntry: kc.kaggle_client()\nexcept kc.KaggleCredentialsError as e: print("ERR", e)\n'
            'print("imported" if "kaggle" in sys.modules else "not imported", "torch" in sys.modules)')
    env = {k: v for k, v in os.environ.items() if not k.startswith('KAGGLE_')}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO), KAGGLE_CONFIG_DIR=str(tmp_path / 'cfg'))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith('ERR no Kaggle credentials found. Create an API token') and 'kaggle.json' in out
    assert out.rstrip().endswith('not imported False')                    # nor torch: the workstation side is light
    assert not (tmp_path / 'cfg').exists()                                # nothing written either


def test_find_credentials_knows_the_clients_sources(tmp_path):
    assert kc.find_credentials({}, tmp_path) is None
    assert kc.find_credentials({'KAGGLE_API_TOKEN': 't'}, tmp_path) == 'KAGGLE_API_TOKEN'
    assert kc.find_credentials({'KAGGLE_USERNAME': 'me'}, tmp_path) is None              # a key is needed too
    (tmp_path / 'cfg').mkdir(); (tmp_path / 'cfg' / 'kaggle.json').write_text('{}')
    assert kc.find_credentials({'KAGGLE_CONFIG_DIR': str(tmp_path / 'cfg')}, tmp_path) == str(tmp_path / 'cfg' / 'kaggle.json')
    (tmp_path / '.config' / 'kaggle').mkdir(parents=True); (tmp_path / '.config' / 'kaggle' / 'kaggle.json').write_text('{}')
    assert kc.find_credentials({}, tmp_path) == str(tmp_path / '.config' / 'kaggle' / 'kaggle.json')


def test_real_client_without_network_gives_a_clear_error(monkeypatch):
    "The real KaggleApi, authenticated with (made-up) legacy credentials: its first request fails clearly, never with a raw traceback."
    monkeypatch.setenv('KAGGLE_USERNAME', 'someone'); monkeypatch.setenv('KAGGLE_KEY', '0' * 32)
    client = kc.kaggle_client()
    assert type(client).__name__ == 'KaggleApi'
    with pytest.raises(kc.KaggleError) as e: kch.kernel_status(client, 'someone/vqvae-kaggle-train')
    if not vk.has_internet('www.kaggle.com'):
        assert isinstance(e.value, kc.KaggleNetworkError) and 'cannot reach Kaggle' in str(e.value)


@pytest.mark.parametrize('exc,cls,text', [
    (requests.exceptions.ConnectionError('Max retries exceeded'), kc.KaggleNetworkError, 'cannot reach Kaggle'),
    (requests.exceptions.ReadTimeout('timed out'), kc.KaggleNetworkError, 'cannot reach Kaggle'),
    (http_error(429, 'Too Many Requests'), kc.KaggleQuotaError, 'quota or rate limits'),
    (http_error(401, 'Unauthorized'), kc.KaggleCredentialsError, 'rejected the credentials'),
    (http_error(403, 'Forbidden'), kc.KaggleError, 'permission denied'),
    (ValueError('Cannot access kernel'), kc.KaggleError, 'Cannot access kernel'),
    (SystemExit(1), kc.KaggleError, 'SystemExit'),
])
def test_client_failures_become_clear_errors(exc, cls, text):
    def boom(*a, **k): raise exc
    with pytest.raises(cls) as e: kc.api_call('reading the status', boom)
    assert text in str(e.value) and str(e.value).startswith('reading the status')


# -- push / status / output ------------------------------------------------------------------------------------------

def test_push_validates_stages_pushes_and_reports_the_url(tmp_path):
    fake, lines = FakeKaggle(), []
    r = kp.push_kernel(REPO, fake, {'PRESET': 'cpu'}, accelerator='NvidiaL4', timeout_seconds=3600, stage_dir=tmp_path / 's', log=lines.append)
    assert (r.kernel, r.version, r.url) == (KID, 1, f'https://www.kaggle.com/code/{KID}?scriptVersionId=1001')
    assert lines[-1] == f'pushed {KID} version 1: {r.url}'
    p = fake.pushes[0]
    assert (p['acc'], p['timeout'], p['meta']['code_file']) == ('NvidiaL4', 3600, 'train.ipynb')
    assert injected(p['nb'])['PRESET'] == 'cpu' and 'PACKAGE_WHEEL' in injected(p['nb'])


def test_push_with_another_id_and_invalid_sources_reported(tmp_path, monkeypatch):
    fake, lines = FakeKaggle(), []
    meta = {**good_meta(), 'dataset_sources': ['ghost/dataset']}
    (tmp_path / 'kernel').mkdir(); (tmp_path / 'kernel' / 'train.ipynb').write_bytes((REPO / 'kernel' / 'train.ipynb').read_bytes())
    (tmp_path / 'kernel-metadata.json').write_text(json.dumps(meta))
    r = kp.push_kernel(tmp_path, fake, kernel_id='me/my-tokenizer', package=False, stage_dir=tmp_path / 's', log=lines.append)
    assert r.kernel == 'me/my-tokenizer' and fake.pushes[0]['meta']['title'] == 'my-tokenizer'
    assert r.invalid_sources == {'dataset': ['ghost/dataset']} and any("did not accept these dataset sources: ['ghost/dataset']" in l for l in lines)


def test_push_errors(tmp_path):
    rejected = FakeKaggle(reject=lambda m: 'Maximum kernel size exceeded')
    with pytest.raises(kc.KaggleError, match=f'Kaggle rejected the push of {KID}: Maximum kernel size exceeded'):
        kp.push_kernel(REPO, rejected, package=False, stage_dir=tmp_path / 'a', log=quiet)
    with pytest.raises(kc.KaggleQuotaError, match='GPU quota'):
        kp.push_kernel(REPO, FakeKaggle(reject=lambda m: 'You have exceeded your weekly GPU quota'), package=False,
                       stage_dir=tmp_path / 'b', log=quiet)
    offline = FakeKaggle(raises={'kernels_push': [requests.exceptions.ConnectionError('Failed to resolve www.kaggle.com')]})
    with pytest.raises(kc.KaggleNetworkError, match=f'pushing {KID}: cannot reach Kaggle'):
        kp.push_kernel(REPO, offline, package=False, stage_dir=tmp_path / 'c', log=quiet)
    with pytest.raises(kp.MetadataError, match="accelerator 'GTX1080'"):
        kp.push_kernel(REPO, FakeKaggle(), accelerator='GTX1080', package=False, stage_dir=tmp_path / 'd', log=quiet)
    bad = tmp_path / 'bad'; (bad / 'kernel').mkdir(parents=True)
    (bad / 'kernel-metadata.json').write_text(json.dumps({**good_meta(), 'enable_internet': 'yes'}))
    fake = FakeKaggle()
    with pytest.raises(kp.MetadataError, match='enable_internet must be true or false'):
        kp.push_kernel(bad, fake, package=False, stage_dir=tmp_path / 'e', log=quiet)
    assert fake.calls == []                                               # validated before any call to Kaggle


def test_status_output_and_log_tail(tmp_path):
    fake = FakeKaggle(statuses={1: ['RUNNING', 'ERROR']})
    kp.push_kernel(REPO, fake, package=False, stage_dir=tmp_path / 's', log=quiet)
    assert kch.kernel_status(fake, KID) == kch.KernelStatus(KID, 'RUNNING', None)
    assert kch.kernel_status(fake, f'{KID}/1') == kch.KernelStatus(f'{KID}/1', 'ERROR', 'Notebook failed: exit code 1')
    plain = types.SimpleNamespace(kernels_status=lambda k: {'status': 'KernelWorkerStatus.COMPLETE', 'failureMessage': ''})
    assert kch.kernel_status(plain, KID).status == 'COMPLETE'
    files = kch.download_output(fake, f'{KID}/1', tmp_path / 'out', pattern=r'summary\.json$')
    assert [f.name for f in files] == ['summary.json', 'vqvae-kaggle-train.log']
    assert fake.calls[-1] == ('kernels_output', (f'{KID}/1', r'summary\.json$'))
    tail = kch.log_tail(files[1].read_text(), 3)
    assert tail == 'step 48\nstep 49\nSTOPPED: LPIPS (alex) needs alexnet-owt-7be5be79.pth'
    assert kch.log_tail('a\nb\nc\n', 2) == 'b\nc'                          # plain-text logs too
    old_client = types.SimpleNamespace(kernels_output=lambda *a, **k: [str(files[0])])   # older clients return a list
    assert kch.download_output(old_client, KID, tmp_path / 'o2') == [files[0]]


def test_wait_tolerates_network_hiccups_but_not_an_outage_or_forever():
    naps = []
    hiccup = FakeKaggle(statuses={1: ['RUNNING', 'COMPLETE']},
                        raises={'kernels_status': [requests.exceptions.ConnectionError('reset')] * 2})
    hiccup.pushes.append({}); hiccup._left[1] = ['RUNNING', 'COMPLETE']
    assert kch.wait_for_kernel(hiccup, f'{KID}/1', 30, sleep=naps.append, log=quiet).status == 'COMPLETE'
    assert naps == [30, 30, 30]
    outage = FakeKaggle(raises={'kernels_status': [requests.exceptions.ConnectionError('down')] * 10})
    with pytest.raises(kc.KaggleNetworkError): kch.wait_for_kernel(outage, KID, 30, sleep=quiet, log=quiet, network_retries=3)
    stuck = FakeKaggle(); stuck.pushes.append({}); stuck._left[1] = ['RUNNING']
    t = iter(range(0, 10**6, 3600))
    with pytest.raises(kc.KaggleError, match=f'{KID}/1 is still RUNNING after 13.0 h'):
        kch.wait_for_kernel(stuck, f'{KID}/1', 60, sleep=quiet, clock=lambda: next(t), log=quiet)


# -- chain -----------------------------------------------------------------------------------------------------------

def test_chain_runs_sessions_each_continuing_from_the_last(tmp_path):
    fake, lines, naps = FakeKaggle(quota=[(0, 30), (12, 30), (24, 30)]), [], []
    out = kch.chain(3, REPO, fake, {'PRESET': 'default'}, sleep=naps.append, work_dir=tmp_path, log=lines.append)
    assert [(r['version'], r['status'], r['summary']['step']) for r in out] == [(1, 'COMPLETE', 1000), (2, 'COMPLETE', 2000), (3, 'COMPLETE', 3000)]
    assert len(naps) == 6                                                 # QUEUED, RUNNING: two polls per session
    params = [injected(p['nb']) for p in fake.pushes]
    assert 'PREVIOUS_OUTPUT' not in params[0] and 'REQUIRE_PREVIOUS' not in params[0]
    assert [(p['PREVIOUS_OUTPUT'], p['REQUIRE_PREVIOUS']) for p in params[1:]] == [(f'{KID}/versions/1', True), (f'{KID}/versions/2', True)]
    assert all(p['PRESET'] == 'default' for p in params)
    assert [p['meta']['kernel_sources'] for p in fake.pushes] == [[], [KID], [KID]]
    assert [c[1][0] for c in fake.calls if c[0] == 'kernels_status'][:3] == [f'{KID}/1'] * 3   # the pushed version is watched
    assert 'session 3/3 complete: stopped (deadline) at epoch 9, step 3000, val PSNR 28.00 dB' in lines[-1]
    assert sum('GPU quota: ' in l for l in lines) == 3


def test_chain_continue_from_and_without_self_source(tmp_path):
    fake = FakeKaggle()
    kch.chain(2, REPO, fake, continue_from=f'{KID}/versions/7', attach_self=False, sleep=quiet, work_dir=tmp_path, log=quiet)
    assert [injected(p['nb'])['PREVIOUS_OUTPUT'] for p in fake.pushes] == [f'{KID}/versions/7', f'{KID}/versions/1']
    assert [p['meta']['kernel_sources'] for p in fake.pushes] == [[], []]


def test_chain_stops_at_a_failed_session_with_its_message_and_log(tmp_path):
    fake = FakeKaggle(statuses={2: ['RUNNING', 'ERROR']})
    with pytest.raises(kc.KernelFailed) as e:
        kch.chain(3, REPO, fake, sleep=quiet, work_dir=tmp_path, log=quiet)
    err = e.value
    assert (err.status, err.failure_message) == ('ERROR', 'Notebook failed: exit code 1')
    assert err.log_tail.splitlines()[-1] == 'STOPPED: LPIPS (alex) needs alexnet-owt-7be5be79.pth'
    assert f'session 2/3 ({KID}/2) ended with ERROR: Notebook failed: exit code 1' in str(err) and 'step 49' in str(err)
    assert len(fake.pushes) == 2                                          # nothing pushed after the failure
    cancelled = FakeKaggle(statuses={1: ['RUNNING', 'CANCEL_ACKNOWLEDGED']}, summary=False)
    with pytest.raises(kc.KernelFailed, match='ended with CANCEL_ACKNOWLEDGED: no failure message'):
        kch.chain(2, REPO, cancelled, sleep=quiet, work_dir=tmp_path / 'c', log=quiet)


def test_chain_stops_when_the_quota_is_exhausted(tmp_path):
    fake = FakeKaggle(quota=[(20, 30), (29.9, 30)])
    with pytest.raises(kc.KaggleQuotaError, match=r'GPU quota exhausted: 0\.10 h left of 30 h this week.*Nothing was pushed'):
        kch.chain(3, REPO, fake, sleep=quiet, work_dir=tmp_path, log=quiet)
    assert len(fake.pushes) == 1
    at_push = FakeKaggle(reject=lambda m: 'GPU quota exceeded' if m['kernel_sources'] else None)
    with pytest.raises(kc.KaggleQuotaError):                              # a quota refusal is not retried
        kch.chain(2, REPO, at_push, sleep=quiet, work_dir=tmp_path / 'b', log=quiet)
    assert len(at_push.pushes) == 1


def test_chain_falls_back_to_kagglehub_when_self_source_is_refused(tmp_path):
    lines = []
    fake = FakeKaggle(reject=lambda m: f"Invalid kernel source {m['id']}" if m['id'] in m['kernel_sources'] else None)
    out = kch.chain(2, REPO, fake, sleep=quiet, work_dir=tmp_path, log=lines.append)
    assert len(out) == 2 and [p['meta']['kernel_sources'] for p in fake.pushes] == [[], []]
    assert injected(fake.pushes[1]['nb'])['PREVIOUS_OUTPUT'] == f'{KID}/versions/1'
    assert any('pushing again without it (kagglehub fetches the output)' in l for l in lines)


def test_chain_without_network_or_credentials(tmp_path, monkeypatch):
    offline = FakeKaggle(raises={'kernels_push': [requests.exceptions.ConnectionError('no route to host')]})
    with pytest.raises(kc.KaggleNetworkError): kch.chain(2, REPO, offline, sleep=quiet, work_dir=tmp_path, log=quiet)
    for k in ('KAGGLE_USERNAME', 'KAGGLE_KEY', 'KAGGLE_API_TOKEN'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    with pytest.raises(kc.KaggleCredentialsError, match='no Kaggle credentials found'):
        kch.chain(1, REPO, None, sleep=quiet, work_dir=tmp_path / 'b', log=quiet)
    with pytest.raises(ValueError, match='at least one session'): kch.chain(0, REPO, FakeKaggle())


def test_refused_self_source_in_a_successful_response_is_pushed_again_without_it(tmp_path):
    "Kaggle's invalidKernelSources arrives inside a successful push response: with no version created, push again without it."
    lines = []
    fake = FakeKaggle(refuse_self=True, refuse_creates=False)
    out = kch.chain(2, REPO, fake, sleep=quiet, work_dir=tmp_path, log=lines.append)
    assert len(out) == 2 and fake.refused == 1 and [p['meta']['kernel_sources'] for p in fake.pushes] == [[], []]
    assert any('refused the kernel as its own source' in l and 'pushing again without it' in l for l in lines)
    # a refusal that still created the version: that session runs (fetching the output with kagglehub); no second session
    lines, fake = [], FakeKaggle(refuse_self=True, refuse_creates=True)
    kch.chain(2, REPO, fake, sleep=quiet, work_dir=tmp_path / 'b', log=lines.append)
    assert len(fake.pushes) == 2 and any(f'did not attach {KID} to version 2' in l for l in lines)


def test_chain_never_takes_an_older_versions_status(tmp_path):
    "A client whose status request cannot name the version: right after the push Kaggle still reports the previous session's COMPLETE."
    fake = FakeKaggle(versions=False, statuses={2: ['COMPLETE', 'QUEUED', 'RUNNING', 'COMPLETE']})
    naps = []
    kch.chain(2, REPO, fake, sleep=naps.append, work_dir=tmp_path, log=quiet)
    statuses = [c[1][0] for c in fake.calls if c[0] == 'kernels_status']
    assert statuses == [KID] * 7 and len(naps) == 5                       # the stale COMPLETE was not the end of session 2
    stale = FakeKaggle(versions=False, statuses={1: ['COMPLETE']})           # never seen starting: an error, not a result
    t = iter(range(0, 10**6, 600))
    with pytest.raises(kc.KaggleError, match='never seen queued or running'):
        kch.chain(1, REPO, stale, sleep=quiet, clock=lambda: next(t), work_dir=tmp_path / 'b', log=quiet)


def test_a_version_not_yet_known_is_polled_again(tmp_path):
    fake = FakeKaggle(raises={'kernels_status': [http_error(404, 'Not Found')]})
    out = kch.chain(1, REPO, fake, sleep=quiet, work_dir=tmp_path, log=quiet)
    assert out[0]['status'] == 'COMPLETE' and [c[1][0] for c in fake.calls if c[0] == 'kernels_status'][0] == f'{KID}/1'


def OldKaggle(**kw):
    "The kaggle client before 2.2.5: kernels_push(folder, timeout=None, acc=None), no no_run."
    from kaggle.api.kaggle_api_extended import KaggleApi
    class OldApi(KaggleApi):
        def kernels_push(self, folder, timeout=None, acc=None): pass
    return FakeKaggle(api_class=OldApi, **kw)


def test_an_older_client_pushes_and_names_the_version_a_feature_needs(tmp_path):
    old = OldKaggle()
    r = kp.push_kernel(REPO, old, {'PRESET': 'cpu'}, accelerator='NvidiaTeslaT4', stage_dir=tmp_path / 's', package=False, log=quiet)
    assert r.version == 1 and old.pushes[0]['acc'] == 'NvidiaTeslaT4'     # no `no_run=` passed: no TypeError
    with pytest.raises(kc.KaggleError, match=r'--no-run needs kaggle >= 2\.2\.5.*pip install -U "kaggle>=2\.2\.5"'):
        kp.push_kernel(REPO, old, no_run=True, stage_dir=tmp_path / 's2', package=False, log=quiet)
    assert len(old.pushes) == 1
    with pytest.raises(TypeError):                                        # the fake is the real interface: a wrong keyword fails
        FakeKaggle().kernels_push(str(tmp_path), no_runs=True)


def Kaggle223():
    "kaggle 2.2.3's (and 2.2.4's) kernels_status, verbatim but for the error handling: the version is parsed, then dropped."
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest
    class Api(KaggleApi):
        def kernels_status(self, kernel):
            if kernel is None: raise ValueError("A kernel must be specified")
            owner_slug, kernel_slug, version = self.parse_kernel_string(kernel)
            with self.build_kaggle_client() as kaggle:
                request = ApiGetKernelSessionStatusRequest()
                request.user_name = owner_slug
                request.kernel_slug = kernel_slug
                return kaggle.kernels.kernels_api_client.get_kernel_session_status(request)
    return Api


def test_reads_versions_decides_from_the_request_the_client_builds(monkeypatch):
    "kaggle 2.2.3/2.2.4 parse 'owner/slug/N' into three parts like 2.2.5 does, but their status request has no version."
    from kaggle.api.kaggle_api_extended import KaggleApi
    old = Kaggle223()
    assert len(old().parse_kernel_string(f'{KID}/3')) == 3                      # what the former check looked at
    assert kc.status_request_version(old) is False and not kc.reads_versions(old())
    assert kc.status_request_version(KaggleApi) is True and kc.reads_versions(KaggleApi())
    assert not kc.reads_versions(FakeKaggle(api_class=old)) and kc.reads_versions(FakeKaggle())   # through the autospec
    assert not kc.reads_versions(FakeKaggle(versions=False))                  # a client that does not even parse it
    assert kc.status_request_version(FakeKaggle) is None                      # not a kaggle client class: not run
    monkeypatch.setattr(kc, 'status_request_version', lambda cls: None)        # a layout the probe cannot run: the version number
    for version, reads in (('2.2.4', False), ('2.2.5', True), ('2.3.0', True), (None, False)):
        monkeypatch.setattr(kc, 'installed_version', lambda dist, v=version: v)
        assert kc.reads_versions(KaggleApi()) is reads, version


@pytest.fixture
def front_end(tmp_path):
    "A copy of the kernel whose parameters cell has SESSION_TOKEN, TIMEOUT_SECONDS and QUOTA_HOURS_LEFT (added where missing)."
    folder = tmp_path / 'front-end'; (folder / 'kernel').mkdir(parents=True)
    (folder / 'kernel-metadata.json').write_bytes((REPO / 'kernel-metadata.json').read_bytes())
    nb = json.loads((REPO / 'kernel' / 'train.ipynb').read_text())
    cell = nb['cells'][kp.parameters_cell(nb)]
    missing = [k for k in kp.SESSION_PARAMETERS if k not in kp.parameter_names(nb)]
    cell['source'] = kp.cell_source(cell).rstrip('\n') + '\n' + ''.join(f'{k} = None\n' for k in missing)
    (folder / 'kernel' / 'train.ipynb').write_text(json.dumps(nb))
    return folder


def test_each_push_carries_a_fresh_session_token_and_the_time_limit(front_end, tmp_path):
    fake, lines = FakeKaggle(), []
    r1 = kp.push_kernel(front_end, fake, timeout_seconds=5400, package=False, stage_dir=tmp_path / 'a', log=lines.append)
    r2 = kp.push_kernel(front_end, fake, package=False, stage_dir=tmp_path / 'b', log=quiet)
    p1, p2 = injected(fake.pushes[0]['nb']), injected(fake.pushes[1]['nb'])
    assert (p1['SESSION_TOKEN'], p1['TIMEOUT_SECONDS'], fake.pushes[0]['timeout']) == (r1.token, 5400, 5400)
    assert len(r1.token) == 32 and int(r1.token, 16) >= 0 and r2.token == p2['SESSION_TOKEN'] != r1.token
    assert 'TIMEOUT_SECONDS' not in p2 and fake.pushes[1]['timeout'] is None
    assert any(l.startswith(f'session token {r1.token}') for l in lines) and lines[-1].startswith(f'pushed {KID} version 1')
    # a front end without these parameters (an older kernel/train.ipynb): pushed without them, saying what it lacks
    old = tmp_path / 'old'; (old / 'kernel').mkdir(parents=True)
    (old / 'kernel-metadata.json').write_bytes((REPO / 'kernel-metadata.json').read_bytes())
    (old / 'kernel' / 'train.ipynb').write_text(json.dumps(dict(cells=[dict(
        cell_type='code', metadata={'tags': ['parameters']}, outputs=[], execution_count=None,
        source="# parameters\nPRESET = 'auto'\nPACKAGE_WHEEL = None\n")], metadata={}, nbformat=4, nbformat_minor=5)))
    lines = []
    r = kp.push_kernel(old, fake, timeout_seconds=600, package=False, stage_dir=tmp_path / 'c', log=lines.append)
    assert r.token is None and injected(fake.pushes[2]['nb']) == {} and fake.pushes[2]['timeout'] == 600
    assert [l.split(':')[1].split()[-2] for l in lines if l.startswith('warning: the notebook has no')] == ['SESSION_TOKEN', 'TIMEOUT_SECONDS']


@pytest.mark.parametrize('detected', [True, False], ids=['reads_versions-wrong', 'reads_versions-right'])
def test_chain_is_never_fooled_by_a_client_that_drops_the_version(front_end, tmp_path, monkeypatch, detected):
    """A client that parses 'owner/slug/N' and sends no version: after each push Kaggle first answers with the previous
    version's COMPLETE (and output, with its token). Whether or not `reads_versions` sees through the client, session k+1 is
    pushed only after session k's own COMPLETE, with its own token in summary.json."""
    fake = FakeKaggle(ignores_versions=True, stale_polls=2, api_class=None if detected else Kaggle223())
    assert kc.reads_versions(fake) is detected                           # True: the worst case, only the token saves it
    served, pushes_seen = [], []
    status, push = fake.api.kernels_status.side_effect, fake.api.kernels_push.side_effect
    def watch_status(kernel):
        v = fake._version(kernel)                                          # the version this answer is about
        r = status(kernel); served.append((len(fake.pushes), v, r.status.name)); return r
    def watch_push(*a, **k): pushes_seen.append(list(served)); return push(*a, **k)
    fake.api.kernels_status.side_effect, fake.api.kernels_push.side_effect = watch_status, watch_push
    lines = []
    out = kch.chain(3, front_end, fake, sleep=quiet, work_dir=tmp_path / 'w', log=lines.append)
    tokens = [p['token'] for p in fake.pushes]
    assert len(set(tokens)) == 3 and [r['summary']['session_token'] for r in out] == tokens
    assert [r['summary']['step'] for r in out] == [1000, 2000, 3000]
    for k in (1, 2):    # before push k+1: the last status served was version k's own COMPLETE, while k was the newest push
        assert pushes_seen[k][-1] == (k, k, 'COMPLETE'), pushes_seen[k][-3:]
    stale = [(n, v, s) for n, v, s in served if v < n]
    assert stale == [(2, 1, 'COMPLETE')] * 2 + [(3, 2, 'COMPLETE')] * 2    # the stale answers were there, and not taken
    if detected:
        assert sum('is not the awaited session (its summary.json names session token' in l for l in lines) == 2


def test_a_finished_status_without_this_pushs_token_is_never_the_end(front_end, tmp_path):
    "Kaggle keeps answering with the previous version (or the session writes no token): an error after the limit, nothing pushed."
    fake = FakeKaggle(ignores_versions=True, stale_polls=10**6)           # never learns of version 2
    t = iter(range(0, 10**7, 600))
    with pytest.raises(kc.KaggleError) as e:
        kch.chain(3, front_end, fake, sleep=quiet, clock=lambda: next(t), work_dir=tmp_path / 'a', log=quiet)
    t1, t2 = (p['token'] for p in fake.pushes)
    assert f'{KID}/2: Kaggle has reported COMPLETE for' in str(e.value) and len(fake.pushes) == 2
    assert f'not of the awaited session: its summary.json names session token {t1}, not this push\'s {t2}' in str(e.value)
    untokened = FakeKaggle(tokens=False)
    with pytest.raises(kc.KaggleError, match="its output has no summary.json naming a session token"):
        kch.chain(2, front_end, untokened, sleep=quiet, clock=lambda: next(t), work_dir=tmp_path / 'b', log=quiet)
    assert len(untokened.pushes) == 1
    failed = FakeKaggle(tokens=False, statuses={1: ['RUNNING', 'ERROR']})  # a crash before summary.json: its failure stands
    with pytest.raises(kc.KernelFailed, match='ended with ERROR'):
        kch.chain(2, front_end, failed, sleep=quiet, work_dir=tmp_path / 'c', log=quiet)
    stuck = FakeKaggle(); stuck.pushes.append({}); stuck._left[1] = ['COMPLETE']
    with pytest.raises(kc.KaggleError, match=r'is still COMPLETE after 1\.0 h, and that is not the awaited session: old token'):
        kch.wait_for_kernel(stuck, f'{KID}/1', 60, 3600, sleep=quiet, clock=lambda: next(t), log=quiet,
                           start_timeout_seconds=10**9, stale=lambda st: 'old token')


def test_a_summary_that_cannot_be_read_yet_is_asked_for_again(front_end, tmp_path):
    fake, lines = FakeKaggle(raises={'kernels_output': [requests.exceptions.ConnectionError('reset'), http_error(404)]}), []
    out = kch.chain(1, front_end, fake, sleep=quiet, work_dir=tmp_path, log=lines.append)
    assert out[0]['summary']['session_token'] == fake.pushes[0]['token']
    assert sum('its summary.json could not be read yet' in l for l in lines) == 1       # one line for the streak
    assert [c[0] for c in fake.calls].count('kernels_output') == 3


def test_chain_passes_the_time_limit_and_the_quota_left_to_each_session(front_end):
    fake = FakeKaggle(quota=[(10, 30), (22.5, 30)])
    rc, lines = cli(['kernel', 'chain', '2', '--folder', str(front_end), '--timeout-seconds', '7200'], fake)
    assert rc == 0 and [p['timeout'] for p in fake.pushes] == [7200, 7200]
    params = [injected(p['nb']) for p in fake.pushes]
    assert [(p['TIMEOUT_SECONDS'], p['QUOTA_HOURS_LEFT']) for p in params] == [(7200, 20.0), (7200, 7.5)]
    assert [l for l in lines if 'QUOTA_HOURS_LEFT' in l] == ['session 1/2: QUOTA_HOURS_LEFT=20.0 (the session ends within the GPU quota left)',
                                                           'session 2/2: QUOTA_HOURS_LEFT=7.5 (the session ends within the GPU quota left)']
    plain = FakeKaggle()                                                  # a client that cannot read the quota: nothing injected
    kch.chain(1, front_end, plain, sleep=quiet, work_dir=front_end / 'w', log=quiet)
    assert 'QUOTA_HOURS_LEFT' not in injected(plain.pushes[0]['nb'])


def fallback_data(v):
    "summary.json's data entry: version 2 fell back to Crafter."
    if v == 2: return dict(requested='minecraft', trained='crafter', fallback='the Minecraft game failed to install',
                           description='Crafter, 64x64 rendered worlds')
    return dict(requested='minecraft', trained='minecraft', fallback=None, description='first-person Minecraft worlds')


def test_the_trained_source_is_printed_and_a_fallback_is_loud(front_end, tmp_path):
    fake, lines = FakeKaggle(data=fallback_data), []
    kch.chain(2, front_end, fake, sleep=quiet, work_dir=tmp_path / 'w', log=lines.append)
    done = [l for l in lines if ' complete: ' in l]
    assert done[0].startswith('session 1/2 complete: stopped (deadline) at epoch 3, step 1000, val PSNR 26.00 dB, trained on minecraft')
    assert ', trained on crafter (' in done[1]
    assert lines[-1] == 'WARNING: trained on crafter, not minecraft (the Minecraft game failed to install)'
    assert sum(l.startswith('WARNING') for l in lines) == 1
    rc, out = cli(['kernel', 'status', f'{KID}/2'], fake)
    assert rc == 0 and out == [f'{KID}/2: COMPLETE', f'{KID}/2: trained on crafter: Crafter, 64x64 rendered worlds',
                               f'{KID}/2: WARNING: trained on crafter, not minecraft (the Minecraft game failed to install)']
    assert cli(['kernel', 'status', f'{KID}/1'], fake)[1][1:] == [f'{KID}/1: trained on minecraft: first-person Minecraft worlds']
    rc, out = cli(['kernel', 'output', f'{KID}/2', '--path', str(tmp_path / 'o')], fake)
    assert rc == 0 and out[1:] == ['cpu/summary.json: trained on crafter: Crafter, 64x64 rendered worlds',
                                   'cpu/summary.json: WARNING: trained on crafter, not minecraft (the Minecraft game failed to install)']
    offline = FakeKaggle(raises={'kernels_output': [requests.exceptions.ConnectionError('no route to host')]})
    offline.pushes.append({}); offline._left[1] = ['COMPLETE']
    rc, out = cli(['kernel', 'status', KID], offline)                     # the status still comes, and one line says why no more
    assert rc == 0 and out[0] == f'{KID}: COMPLETE' and len(out) == 2 and 'summary.json not read' in out[1] and 'cannot reach Kaggle' in out[1]


def test_admin_only_accelerator_warns(tmp_path):
    fake, lines = FakeKaggle(), []
    kp.push_kernel(REPO, fake, accelerator='NvidiaTeslaT4Highmem', package=False, stage_dir=tmp_path / 's', log=lines.append)
    assert "warning: accelerator 'NvidiaTeslaT4Highmem' is admin-only, for Kaggle's administrators only" in lines[0]
    assert fake.pushes[0]['acc'] == 'NvidiaTeslaT4Highmem'                  # a warning: Kaggle has the last word


def test_validate_reports_the_installed_clients():
    rc, lines = cli(['kernel', 'validate', '--folder', str(REPO)])
    assert rc == 0
    import kaggle, kagglehub
    assert any(l.startswith(f'kaggle {kaggle.__version__} (needs >= 1.8.4): ok') for l in lines), lines
    assert any(l.startswith(f'kagglehub {kagglehub.__version__} (needs >= 0.3.7): ok') for l in lines), lines


def test_metadata_as_kaggles_tools_write_it(tmp_path):
    "`kaggle kernels init` writes machine_shape \"\"; Kaggle's documented example writes \"true\"/\"false\" strings."
    meta = json.loads((REPO / 'kernel-metadata.json').read_text())
    meta.update(machine_shape='', enable_gpu='true', is_private='false', enable_internet='true')
    (tmp_path / 'kernel').mkdir(); (tmp_path / 'kernel' / 'train.ipynb').write_text((REPO / 'kernel' / 'train.ipynb').read_text())
    (tmp_path / 'kernel-metadata.json').write_text(json.dumps(meta))
    m = kp.validate_metadata(tmp_path)
    assert (m['enable_gpu'], m['is_private'], 'machine_shape' in m) == (True, False, False)
    fake = FakeKaggle(quota=[(29.9, 30)])                                   # "true" is a GPU kernel: the quota is checked
    with pytest.raises(kc.KaggleQuotaError): kch.chain(1, tmp_path, fake, sleep=quiet, work_dir=tmp_path / 'w', log=quiet)
    meta.update(enable_gpu='false'); (tmp_path / 'kernel-metadata.json').write_text(json.dumps(meta))
    kch.chain(1, tmp_path, FakeKaggle(quota=[(29.9, 30)]), sleep=quiet, work_dir=tmp_path / 'w2', log=quiet)   # "false": no GPU, no check


# -- the `kernel` command ------------------------------------------------------------------------------------------------

def cli(argv, client=None, capsys=None):
    "`vqvae-kaggle <argv>` parsed by the project's own CLI parser, run with an injected client."
    from vqvae_kaggle.cli import build_parser
    lines = []
    rc = kch.run_kernel_command(build_parser().parse_args(argv), client, log=lines.append, sleep=quiet)
    return rc, lines


def test_cli_commands(tmp_path, capsys):
    folder = ['--folder', str(REPO)]
    assert cli(['kernel', 'validate', *folder])[0] == 0
    fake = FakeKaggle(statuses={1: ['QUEUED', 'COMPLETE']})
    rc, lines = cli(['kernel', 'push', *folder, '--preset', 'cpu', '--set', 'optim.lr=3e-4', '--lpips-weight', '0',
                     '--budget-minutes', '60', '--no-lpips-download', '--continue'], fake)
    assert rc == 0 and lines[-1].startswith(f'pushed {KID} version 1: https://www.kaggle.com/code/{KID}')
    assert {k: v for k, v in injected(fake.pushes[0]['nb']).items() if k not in ('PACKAGE_WHEEL', 'SESSION_TOKEN')} == dict(
        PRESET='cpu', LPIPS_WEIGHT=0.0, BUDGET_MINUTES=60.0, OVERRIDES=['optim.lr=3e-4'], LPIPS_DOWNLOAD=False,
        PREVIOUS_OUTPUT=KID, REQUIRE_PREVIOUS=True)
    assert cli(['kernel', 'status', *folder], fake) == (0, [f'{KID}: QUEUED'])
    assert cli(['kernel', 'status', f'{KID}/1'], fake) == (0, [f'{KID}/1: COMPLETE'])      # its summary.json names no data source
    rc, lines = cli(['kernel', 'output', f'{KID}/1', '--path', str(tmp_path / 'out')], fake)
    assert rc == 0 and lines == [f'2 file(s) of {KID}/1 in {tmp_path / "out"}'] and (tmp_path / 'out' / 'cpu' / 'summary.json').is_file()
    rc, lines = cli(['kernel', 'chain', '2', *folder, '--poll-seconds', '0'], FakeKaggle())
    assert rc == 0 and lines[-1].startswith('session 2/2 complete')


def test_cli_errors_exit_nonzero_with_one_clear_message(tmp_path, capsys, monkeypatch):
    failed = FakeKaggle(statuses={1: ['RUNNING', 'ERROR']})
    assert cli(['kernel', 'chain', '2', '--folder', str(REPO)], failed)[0] == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: session 1/2 ({KID}/1) ended with ERROR: Notebook failed: exit code 1') and 'STOPPED: LPIPS' in err
    assert cli(['kernel', 'status', '--folder', str(REPO)], failed)[0] == 1          # reports a failed version
    assert cli(['kernel', 'push', '--folder', str(tmp_path)], FakeKaggle())[0] == 2
    assert 'error: kernel metadata not found' in capsys.readouterr().err
    for k in ('KAGGLE_USERNAME', 'KAGGLE_KEY', 'KAGGLE_API_TOKEN'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert cli(['kernel', 'status', 'me/some-kernel'])[0] == 2
    assert capsys.readouterr().err.startswith('error: no Kaggle credentials found')
    quota = FakeKaggle(quota=[(30, 30)])
    assert cli(['kernel', 'chain', '1', '--folder', str(REPO)], quota)[0] == 2
    assert 'error: GPU quota exhausted' in capsys.readouterr().err


def test_kernel_command_is_wired_into_the_projects_cli(capsys):
    "`vqvae-kaggle kernel ...` through `cli.main`, the console script's entry point (not a parser the test builds itself)."
    from vqvae_kaggle import cli
    assert cli.main(['kernel', 'validate', '--folder', str(REPO)]) == 0
    assert 'kernel-metadata.json: valid' in capsys.readouterr().out


def test_previous_output_fetch_gives_up_at_its_time_limit(monkeypatch, capsys):
    "Inside a kernel kagglehub waits for a mount in a loop without end: the fetch stops at its limit and says what it waited for."
    import time
    monkeypatch.setenv('VQVAE_KAGGLEHUB_TIMEOUT', '0.3')
    assert vk.fetch_previous_output(f'{KID}/versions/1', download=lambda h: time.sleep(60)) is None
    out = capsys.readouterr().out
    assert f'kagglehub fetching {KID}/versions/1 did not finish in 0.3 s' in out and 'attached' in out


def test_chain_publishes_the_model_from_its_last_session_only(front_end):
    "`--publish-model` reaches the front end as PUBLISH_MODEL, in the last session of a chain (and in a single push)."
    fake = FakeKaggle()
    rc, _ = cli(['kernel', 'chain', '3', '--folder', str(front_end), '--publish-model', 'alice/mc-tokenizer/pytorch/t4'], fake)
    assert rc == 0
    assert [injected(p['nb']).get('PUBLISH_MODEL') for p in fake.pushes] == [None, None, 'alice/mc-tokenizer/pytorch/t4']
    one = FakeKaggle()
    rc, _ = cli(['kernel', 'push', '--folder', str(front_end), '--publish-model', 'alice/mc-tokenizer/pytorch/t4'], one)
    assert rc == 0 and injected(one.pushes[0]['nb'])['PUBLISH_MODEL'] == 'alice/mc-tokenizer/pytorch/t4'
