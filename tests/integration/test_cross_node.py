"""Multi-node prototype: the BLS combiner calls a member served by another tritonserver over
gRPC. Two real embedded servers on loopback stand for two nodes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import assert_one_line_error, merge_into, run_cli, spec_data, write_spec
from tests.onnx_factory import FEATURES, member_outputs, reference_combine
from tests.unit.test_production import _imported_modules
from tritongen.errors import ServerError, SpecError
from tritongen.examples.digits import write_example
from tritongen.plan.plan import default_plan
from tritongen.render.repository import Combiner, parse_config, render_repository
from tritongen.serve.server import EmbeddedServer, GrpcTls, free_port
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

pytestmark = pytest.mark.server
DIGITS = ["mlp", "cnn", "resmlp"]  # the members of tritongen.examples.digits


def _render(folder: Path, data: dict, combiner: Combiner = Combiner.bls) -> Path:
    folder.mkdir(exist_ok=True)
    ensemble = load_ensemble(load_spec(write_spec(folder, data)))
    inventory = detect_devices()
    plan = default_plan(ensemble, inventory)
    return render_repository(ensemble, plan, inventory, folder / "repo", combiner=combiner)


@pytest.fixture(scope="module")
def node_a(
    member_models: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    """The other node: serves the first member (`linear`) on its own."""
    folder = tmp_path_factory.mktemp("node_a")
    data = spec_data(member_models[:1], name="node_a")
    with EmbeddedServer(_render(folder, data), ready_timeout_s=300) as server:
        yield server


def _with_remote_linear(member_models: list[Path], url: str, **overrides: object) -> dict:
    data = spec_data(member_models, **overrides)
    data["members"][0]["url"] = url
    return data


def _infer(server: EmbeddedServer, model: str, batch: np.ndarray) -> grpcclient.InferResult:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    return client.infer(model, [tensor])


def test_combiner_answers_with_a_member_served_by_another_server(
    node_a: EmbeddedServer, member_models: list[Path], tmp_path: Path
) -> None:
    data = _with_remote_linear(member_models, node_a.grpc_url, combine={"rule": "weighted_mean"})
    repo = _render(tmp_path / "node_b", data)
    assert not (repo / "linear").exists()  # not served here
    assert "tritonclient" in _imported_modules(repo / "ens" / "1" / "remote.py")
    batch = np.random.default_rng(11).standard_normal((8, FEATURES)).astype(np.float32)
    with EmbeddedServer(repo, ready_timeout_s=300) as node_b:
        result = _infer(node_b, "ens", batch)
    expected = reference_combine(
        member_outputs(member_models, batch), "weighted_mean", "softmax", [1.0, 2.0, 0.5]
    )
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-4, atol=1e-5)
    assert result.as_numpy("ANSWERED").all()


def test_unreachable_remote_member_is_reported_as_not_answered(
    member_models: list[Path], tmp_path: Path
) -> None:
    data = _with_remote_linear(member_models, "127.0.0.1:9", min_members=2)
    batch = np.random.default_rng(12).standard_normal((3, FEATURES)).astype(np.float32)
    with EmbeddedServer(_render(tmp_path, data), ready_timeout_s=300) as node_b:
        result = _infer(node_b, "ens", batch)
    assert result.as_numpy("ANSWERED").tolist() == [[False, True, True]] * 3
    expected = reference_combine(
        member_outputs(member_models[1:], batch), "mean", "softmax", [2.0, 0.5]
    )
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-4, atol=1e-5)


def test_remote_member_needs_the_bls_combiner(member_models: list[Path], tmp_path: Path) -> None:
    data = _with_remote_linear(member_models, "127.0.0.1:8001")
    with pytest.raises(SpecError, match=r"member linear has a url.*--combiner bls"):
        _render(tmp_path, data, combiner=Combiner.ensemble)


def test_local_only_combiner_has_no_remote_code(member_models: list[Path], tmp_path: Path) -> None:
    repo = _render(tmp_path, spec_data(member_models))
    assert not (repo / "ens" / "1" / "remote.py").exists()


# ----------------------------------------------------------------------- planned across nodes

NODE_MEMORY = 250_000_000  # two members of 100 MB fit one node, three do not


def _two_node_build(
    folder: Path, ports: dict[str, int], tls: dict[str, str] | None = None
) -> tuple[Path, dict]:
    """The digits example built by the CLI for two "nodes" that are both this machine's CPU,
    from a hand-written profile (no profiling): members split, each node on its own port."""
    spec = write_example(folder / "digits", epochs=5)
    devices = {
        "devices": [
            {"id": f"cpu_{n}", "kind": "cpu", "class": "cpu", "memory_bytes": NODE_MEMORY,
             "cores": 1, "node": n}
            for n in ports
        ],
        "nodes": {
            n: {"grpc_url": f"127.0.0.1:{p}", **({"tls": tls} if tls else {})}
            for n, p in ports.items()
        },
    }  # fmt: skip
    entries = {str(b): {"throughput": 500.0 * b, "memory_bytes": 100_000_000} for b in (1, 8)}
    profile = {"version": 1, "members": {m: {"cpu": entries} for m in DIGITS}}
    (folder / "DEVICES.json").write_text(json.dumps(devices))
    (folder / "profile.json").write_text(json.dumps(profile))
    out = folder / "repo"
    result = run_cli(
        "build", str(spec), "-o", str(out),
        "--devices", str(folder / "DEVICES.json"), "--profile", str(folder / "profile.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "plan.json").read_text())


def test_members_planned_on_two_nodes_answer_through_the_combiner(tmp_path: Path) -> None:
    ports = {"n1": free_port(), "n2": free_port()}
    out, plan = _two_node_build(tmp_path, ports)
    primary = plan["primary_node"]
    (other,) = set(ports) - {primary}
    assert sorted(Counter(plan["nodes"].values()).values()) == [1, 2]
    remote = [m for m, n in plan["nodes"].items() if n == other]
    assert sorted(p.name for p in (out / "nodes" / other).iterdir()) == remote
    assert not (out / "nodes" / primary / remote[0]).exists()
    batch = np.random.default_rng(7).random((6, 64), dtype=np.float32)
    with (
        EmbeddedServer(out / "nodes" / other, grpc_port=ports[other], ready_timeout_s=300),
        EmbeddedServer(
            out / "nodes" / primary, grpc_port=ports[primary], ready_timeout_s=300
        ) as node,
    ):
        result = _infer(node, "digits", batch)
    models = [tmp_path / "digits" / "models" / f"{m}.onnx" for m in DIGITS]
    expected = reference_combine(member_outputs(models, batch), "mean", "softmax", [1.0] * 3)
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-4, atol=1e-5)
    assert result.as_numpy("ANSWERED").all()


def test_multi_node_build_refuses_the_ensemble_combiner_and_serving_its_root(
    tmp_path: Path,
) -> None:
    out, _ = _two_node_build(tmp_path, {"n1": 8001, "n2": 8001})
    spec = tmp_path / "digits" / "ensemble.yaml"
    args = ["--devices", str(tmp_path / "DEVICES.json"), "--plan", str(out / "plan.json")]
    refused = run_cli(
        "build", str(spec), "-o", str(tmp_path / "r"), "--combiner", "ensemble", *args
    )
    assert_one_line_error(refused, "only the BLS combiner calls members on other nodes")
    with pytest.raises(ServerError, match=r"one repository per node \(n\d, n\d\); serve .*/nodes/"):
        EmbeddedServer(out).start()


# ------------------------------------------------------------------------------ TLS between nodes


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(folder: Path, name: str, extensions: str) -> None:
    """`name.key` and `name.pem`, signed by `ca.pem`."""
    key, csr, pem = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(folder / "ca.pem"),
        "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "1",
        "-out", str(pem), "-extfile", str(ext),
    )  # fmt: skip


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA made for this test, a server certificate for 127.0.0.1 and a client one."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    folder = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem"), "-days", "1",
        "-subj", "/CN=tritongen-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
    )  # fmt: skip
    _signed(folder, "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _signed(folder, "client", "extendedKeyUsage=clientAuth\n")
    return folder


@pytest.fixture(scope="module")
def node_a_tls(
    member_models: list[Path], certificates: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    """The other node, whose gRPC endpoint takes only mutual TLS with our CA's clients."""
    folder = tmp_path_factory.mktemp("node_a_tls")
    tls = GrpcTls(certificates / "server.pem", certificates / "server.key", certificates / "ca.pem")
    repo = _render(folder, spec_data(member_models[:1], name="node_a"))
    with EmbeddedServer(repo, ready_timeout_s=300, grpc_tls=tls) as server:
        yield server


def test_combiner_calls_a_member_over_mutual_tls_and_plaintext_is_refused(
    node_a_tls: EmbeddedServer, member_models: list[Path], certificates: Path, tmp_path: Path
) -> None:
    client = {
        "root_certificates": str(certificates / "ca.pem"),
        "private_key": str(certificates / "client.key"),
        "certificate_chain": str(certificates / "client.pem"),
    }
    variants = {
        "mutual": client,
        "no_client_cert": {"root_certificates": client["root_certificates"]},
        "plaintext": None,
    }
    repository = tmp_path / "node_b"
    repository.mkdir()
    for name, tls in variants.items():
        data = _with_remote_linear(member_models, node_a_tls.grpc_url, name=name, min_members=2)
        if tls is not None:
            data["members"][0]["tls"] = tls
        merge_into(_render(tmp_path / name, data), repository)
    batch = np.random.default_rng(13).standard_normal((4, FEATURES)).astype(np.float32)
    with EmbeddedServer(repository, ready_timeout_s=300) as node_b:
        answered = {n: _infer(node_b, n, batch).as_numpy("ANSWERED")[:, 0] for n in variants}
        result = _infer(node_b, "mutual", batch)
    assert answered["mutual"].all()
    assert not answered["no_client_cert"].any() and not answered["plaintext"].any()
    expected = reference_combine(member_outputs(member_models, batch), "mean", "softmax", [1.0] * 3)
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-4, atol=1e-5)


def test_tls_of_a_node_in_devices_json_reaches_the_combiners_calls(tmp_path: Path) -> None:
    """The primary's combiner calls another node with the TLS files DEVICES.json gives it
    (paths relative to DEVICES.json are made absolute)."""
    out, _ = _two_node_build(
        tmp_path, {"n1": 8001, "n2": 8001}, tls={"root_certificates": "ca.pem"}
    )
    plan = json.loads((out / "plan.json").read_text())
    primary = out / "nodes" / plan["primary_node"]
    config = parse_config((primary / "digits" / "config.pbtxt").read_text(), "digits")
    members = json.loads(config.parameters["members"].string_value)
    remote = [m for m in members if "url" in m]
    assert remote and all(
        m["tls"] == {"root_certificates": str(tmp_path / "ca.pem")} for m in remote
    )
