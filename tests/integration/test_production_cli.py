"""Production deployment run for real: the init container's script under sh, and the
`tritongen k8s` command (what is rendered: unit/test_production.py)."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.unit import test_production as unit_half
from tests.unit.test_production import (
    GPU_PLAN,
    GPUS,
    _ensemble,
    _manifests,
)
from tritongen.render.k8s import (
    K8sOptions,
    RepositorySource,
    render_manifests,
)
from tritongen.render.repository import render_repository

docker_repo = unit_half.docker_repo  # a fixture the unit half of this file shares

pytestmark = pytest.mark.subprocess


def _run_init_container(
    deployment: dict, archive: Path, models: Path
) -> subprocess.CompletedProcess[str]:
    """The init container's command, run here by sh against a loopback HTTP server that
    serves `archive` (wget and sha256sum stand in for busybox's)."""
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(archive.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as http:
        threading.Thread(target=http.serve_forever, daemon=True).start()
        env = {e["name"]: e["value"] for e in init["env"]}
        env |= {
            "REPOSITORY_URL": f"http://127.0.0.1:{http.server_address[1]}/{archive.name}",
            "MODELS_DIR": str(models),
            "PATH": os.environ["PATH"],
        }
        try:
            return subprocess.run(init["command"], env=env, capture_output=True, text=True)
        finally:
            http.shutdown()


@pytest.mark.skipif(shutil.which("wget") is None, reason="needs wget to stand in for busybox's")
def test_init_container_unpacks_only_the_archive_of_the_given_sha256(
    tmp_path: Path, docker_repo: Path
) -> None:
    archive = tmp_path / "served" / "repository.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(docker_repo, arcname=".")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    options = K8sOptions(
        source=RepositorySource.init, repository_url="https://h/r.tgz", repository_sha256=(digest,)
    )
    deployment = _manifests(render_manifests(docker_repo, tmp_path / "d", options)[0].parent)[
        "deployment.yaml"
    ]
    good = tmp_path / "good"
    good.mkdir()
    assert _run_init_container(deployment, archive, good).returncode == 0
    assert (good / "ens" / "config.pbtxt").is_file() and (good / "plan.json").is_file()
    assert sorted(p.name for p in good.iterdir()) == sorted(p.name for p in docker_repo.iterdir())

    with tarfile.open(archive, "w:gz") as tar:  # the same URL now serves something else
        tar.add(docker_repo / "plan.json", arcname="plan.json")
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    result = _run_init_container(deployment, archive, tampered)
    assert result.returncode != 0 and "sha256 differs" in result.stderr
    assert list(tampered.iterdir()) == []


def test_k8s_command_writes_manifests(tmp_path: Path, docker_repo: Path) -> None:
    result = run_cli("k8s", str(docker_repo), "-o", str(tmp_path / "deploy"), "--name", "digits")
    assert result.returncode == 0, result.stderr
    manifests = _manifests(tmp_path / "deploy")
    assert manifests["service.yaml"]["metadata"]["name"] == "digits"


def test_k8s_command_errors_are_one_line_with_exit_2(
    tmp_path: Path, docker_repo: Path, member_models: list[Path]
) -> None:
    out = str(tmp_path / "deploy")
    assert_one_line_error(
        run_cli("k8s", str(tmp_path / "none"), "-o", out), "no such model repository"
    )
    (tmp_path / "foreign").mkdir()
    assert_one_line_error(run_cli("k8s", str(tmp_path / "foreign"), "-o", out), "not written by")
    (docker_repo / "plan.json").unlink()
    assert_one_line_error(run_cli("k8s", str(docker_repo), "-o", out), "plan.json: missing")
    ensemble = _ensemble(tmp_path, member_models)
    embedded = render_repository(ensemble, GPU_PLAN, GPUS, tmp_path / "embedded")
    assert_one_line_error(run_cli("k8s", str(embedded), "-o", out), "--target docker")
    bad_options = ["--repository-source", "init"]
    assert_one_line_error(run_cli("k8s", str(embedded), *bad_options), "--repository-url")
    assert_one_line_error(run_cli("k8s", str(embedded), "--name", "Bad_Name"), "--name")
    assert not Path(out).exists()
