"""Every call this project makes into the `kaggle` and `kagglehub` clients, bound against the installed clients' real
signatures (`inspect.signature(...).bind`): a renamed or missing parameter in a new (or old) client release fails here,
not on a user's first push. The versions checked are printed (`pytest -s`) and must meet settings.ini's floors."""
import inspect, re
from pathlib import Path

import pytest

kaggle = pytest.importorskip('kaggle')
import kagglehub
from kaggle.api.kaggle_api_extended import KaggleApi

from vqvae_kaggle import kaggle_client as kc

REPO = Path(__file__).resolve().parents[1]


def bind(fn, *args, **kwargs):
    "Bind a call against `fn`'s signature (a method: `self` included), as Python would."
    return inspect.signature(fn).bind(*args, **kwargs)


def test_installed_clients_meet_the_declared_floors():
    ini = (REPO / 'settings.ini').read_text()
    assert f"kaggle>={kc.CLIENT_FLOORS['kaggle']}" in ini and f"kagglehub>={kc.CLIENT_FLOORS['kagglehub']}" in ini
    versions = {d: (v, ok) for d, v, _, ok in kc.client_versions()}
    print(f"contract checked against kaggle {versions['kaggle'][0]}, kagglehub {versions['kagglehub'][0]}")
    assert versions['kaggle'] == (kaggle.__version__, True) and versions['kagglehub'][1]


def test_kaggle_api_calls_bind():
    "The calls in kaggle_client.py, kaggle_push.py and kaggle_chain.py, with the arguments they pass (all optional ones at once)."
    api = object()
    bind(KaggleApi.authenticate, api)
    bind(KaggleApi.kernels_push, api, '/tmp/stage', timeout=3600, acc='NvidiaTeslaT4', no_run=True)
    bind(KaggleApi.kernels_status, api, 'owner/kernel-slug/3')
    bind(KaggleApi.kernels_output, api, 'owner/kernel-slug/3', '/tmp/out', force=True, quiet=True, file_pattern=r'summary\.json$')
    bind(KaggleApi.quota_view, api)
    assert len(KaggleApi().parse_kernel_string('owner/kernel-slug/3')) == 3 and kc.reads_versions(KaggleApi())


def test_the_status_request_probe_runs_the_installed_client():
    """`status_request_version` runs the installed `KaggleApi.kernels_status` with a recording stand-in for
    `build_kaggle_client()` (called without arguments, a context manager whose `.kernels.kernels_api_client
    .get_kernel_session_status(request)` sends the request): None here would mean the client's layout changed and
    `reads_versions` fell back to the version number."""
    bind(KaggleApi.build_kaggle_client, object())
    assert kc.status_request_version(KaggleApi) is True
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest
    assert isinstance(ApiGetKernelSessionStatusRequest.version_label, property)
    by_number = kc.version_tuple(kaggle.__version__) >= kc.version_tuple(kc.FEATURE_VERSIONS['version_label'])
    assert by_number is kc.status_request_version(KaggleApi)             # the fallback agrees with the probe on this client


def test_every_client_call_in_the_source_is_covered():
    "A new call into the client must be added above: the source is scanned for `client.<method>` calls."
    src = ''.join((REPO / 'vqvae_kaggle' / f'{m}.py').read_text() for m in ('kaggle_client', 'kaggle_push', 'kaggle_chain'))
    called = {m for rx in (r'\bclient\.(\w+)\(', r'\bclient\.(\w+),', r'\bcls\.(\w+)\(', r'\bprobe\.(\w+)\b')
              for m in re.findall(rx, src)} - {'kernels_push', 'kernels_status', 'kernels_output', 'quota_view', 'parse_kernel_string',
                                               'build_kaggle_client'}
    assert called == set(), f'calls not covered by the contract test: {called}'
    assert 'api.authenticate()' in src


def test_feature_detection_reads_the_real_signatures():
    for name in ('acc', 'no_run'): assert kc.accepts(KaggleApi.kernels_push, name)
    assert kc.accepts(KaggleApi.kernels_output, 'file_pattern') and not kc.accepts(KaggleApi.kernels_status, 'no_run')


def test_kagglehub_calls_bind():
    "kagglehub.notebook_output_download (the previous session's output) and dataset_download (`kaggle:` sources)."
    bind(kagglehub.notebook_output_download, 'owner/kernel-slug/versions/3')
    bind(kagglehub.dataset_download, 'owner/dataset/versions/2')
    from kagglehub.handle import parse_notebook_handle, parse_dataset_handle
    assert parse_notebook_handle('owner/kernel-slug/versions/3').version == 3      # versioned notebook handles (0.3.7+)
    assert parse_dataset_handle('owner/dataset/versions/2').version == 2
