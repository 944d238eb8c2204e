"""Deployment files are consistent: the Prefect Kubernetes work-pool template, prefect.yaml, the training Dockerfile
and the serving manifests (deploy/). Offline and hermetic: nothing is imported from flows/, nothing talks to a
cluster, a Prefect API or a Docker engine; the job template is rendered with Prefect's own templating function,
the way the Kubernetes worker renders it.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO_ROOT

TEMPLATE = REPO_ROOT / "deploy" / "prefect" / "kubernetes-base-job-template.json"
PREFECT_YAML = REPO_ROOT / "prefect.yaml"
DOCKERFILE = REPO_ROOT / "deploy" / "docker" / "Dockerfile.train"
K8S_CPU = REPO_ROOT / "deploy" / "k8s" / "serving-cpu.yaml"
K8S_GPU = REPO_ROOT / "deploy" / "k8s" / "serving-gpu.yaml"
MANIFESTS = [K8S_CPU, K8S_GPU]

# Prefect's placeholder syntax (prefect.utilities.templating.PLACEHOLDER_CAPTURE_REGEX).
PLACEHOLDER = re.compile(r"{{\s*([\w.\-\[\]$]+)\s*}}")
# Placeholders that reference blocks/variables/env instead of work-pool variables.
REFERENCE_PREFIXES = ("prefect.blocks.", "prefect.variables.", "$")
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}
PROBE_PATHS = {"/livez", "/readyz", "/healthz"}
GPU = "nvidia.com/gpu"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


# ---------------------------------------------------------------------------------------------- loaders


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def properties(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return template["variables"]["properties"]


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _deployments(project: dict[str, Any]) -> list[dict[str, Any]]:
    deployments = project.get("deployments") or []
    assert deployments, f"{_rel(PREFECT_YAML)}: 'deployments' is empty"
    return deployments


def _job_container(job_configuration: dict[str, Any]) -> dict[str, Any]:
    return job_configuration["job_manifest"]["spec"]["template"]["spec"]["containers"][0]


def _placeholders(value: Any) -> set[str]:
    names = set(PLACEHOLDER.findall(json.dumps(value)))
    return {n for n in names if not n.startswith(REFERENCE_PREFIXES)}


def _type_ok(value: Any, declared: str | list[str]) -> bool:
    kinds = [declared] if isinstance(declared, str) else list(declared)
    for kind in kinds:
        python_types = JSON_TYPES[kind]
        if isinstance(value, bool) and bool not in python_types:
            continue  # JSON schema: true is not an integer
        if isinstance(value, python_types):
            return True
    return False


def _render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """What the worker builds: schema defaults overridden by job variables, applied to job_configuration."""
    from prefect.utilities.templating import apply_values

    values = {name: spec["default"] for name, spec in template["variables"]["properties"].items() if "default" in spec}
    values.update(job_variables)
    return apply_values(template["job_configuration"], values)


def _manifest_docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{_rel(path)}: no YAML documents"
    for i, doc in enumerate(docs):
        assert isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc, \
            f"{_rel(path)}: document {i} has no kind/apiVersion"
    return docs


def _of_kind(path: Path, kind: str) -> list[dict[str, Any]]:
    found = [d for d in _manifest_docs(path) if d["kind"] == kind]
    assert found, f"{_rel(path)}: no {kind}"
    return found


def _container_ports(container: dict[str, Any]) -> tuple[set[str], set[int]]:
    ports = container.get("ports") or []
    return {p["name"] for p in ports if "name" in p}, {p["containerPort"] for p in ports}


# ------------------------------------------------------------------------------- work-pool job template


def test_template_has_job_configuration_and_variables(template: dict[str, Any]) -> None:
    where = _rel(TEMPLATE)
    assert isinstance(template.get("job_configuration"), dict), f"{where}: 'job_configuration' missing or not an object"
    assert isinstance(template.get("variables"), dict), f"{where}: 'variables' missing or not an object"
    assert template["variables"].get("type") == "object", f"{where}: variables.type must be 'object'"
    assert isinstance(template["variables"].get("properties"), dict) and template["variables"]["properties"], \
        f"{where}: variables.properties missing or empty"
    manifest = template["job_configuration"].get("job_manifest", {})
    assert manifest.get("kind") == "Job" and manifest.get("apiVersion") == "batch/v1", \
        f"{where}: job_configuration.job_manifest must be a batch/v1 Job"


def test_every_variable_is_used_and_every_placeholder_declared(template: dict[str, Any]) -> None:
    where = _rel(TEMPLATE)
    used = _placeholders(template["job_configuration"])
    declared = set(template["variables"]["properties"])
    assert not used - declared, f"{where}: job_configuration uses undeclared variables {sorted(used - declared)}"
    assert not declared - used, \
        f"{where}: variables.properties declares {sorted(declared - used)} but job_configuration never uses them"


def test_added_variables_are_declared_with_their_defaults(properties: dict[str, dict[str, Any]]) -> None:
    where = _rel(TEMPLATE)
    expected = {
        "gpu_count": ("integer", 0), "nproc_per_node": ("integer", 1),
        "cpu_request": ("string", "2"), "memory_request": ("string", "8Gi"),
    }
    for name, (kind, default) in expected.items():
        assert name in properties, f"{where}: variables.properties.{name} is missing"
        assert properties[name].get("type") == kind, f"{where}: variables.properties.{name}.type is not {kind!r}"
        assert properties[name].get("default") == default, \
            f"{where}: variables.properties.{name}.default is {properties[name].get('default')!r}, not {default!r}"
    assert properties["gpu_count"].get("minimum") == 0, f"{where}: variables.properties.gpu_count.minimum must be 0"
    for name in ("image", "namespace", "env", "service_account_name", "image_pull_policy", "finished_job_ttl",
                 "cpu_limit", "memory_limit", "command", "labels", "name"):
        assert name in properties, f"{where}: Prefect's default variable {name!r} was dropped"


def test_defaults_match_declared_types(properties: dict[str, dict[str, Any]]) -> None:
    where = _rel(TEMPLATE)
    for name, spec in properties.items():
        if "default" not in spec:
            continue
        default = spec["default"]
        assert "type" in spec, f"{where}: variables.properties.{name} has a default but no type"
        assert _type_ok(default, spec["type"]), \
            f"{where}: variables.properties.{name}.default {default!r} is not of type {spec['type']!r}"
        if "enum" in spec:
            assert default in spec["enum"], f"{where}: variables.properties.{name}.default not in its enum"
        if "minimum" in spec:
            assert default >= spec["minimum"], f"{where}: variables.properties.{name}.default is below its minimum"


def test_defaults_validate_against_the_schema(template: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    defaults = {n: s["default"] for n, s in template["variables"]["properties"].items() if "default" in s}
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(template["variables"]).iter_errors(defaults)]
    assert not errors, f"{_rel(TEMPLATE)}: variables defaults fail the variables schema: {errors}"


def test_container_wiring(template: dict[str, Any]) -> None:
    where = _rel(TEMPLATE)
    job = template["job_configuration"]
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    container = _job_container(job)
    # a placeholder that is the whole value renders as the raw value (an int for the GPU count)
    assert container.get("image") == "{{ image }}", f"{where}: containers[0].image is not '{{{{ image }}}}'"
    limits = container.get("resources", {}).get("limits", {})
    requests = container.get("resources", {}).get("requests", {})
    assert limits.get(GPU) == "{{ gpu_count }}", \
        f"{where}: containers[0].resources.limits[{GPU!r}] is {limits.get(GPU)!r}, not '{{{{ gpu_count }}}}'"
    assert requests.get("cpu") == "{{ cpu_request }}", f"{where}: containers[0].resources.requests.cpu"
    assert requests.get("memory") == "{{ memory_request }}", f"{where}: containers[0].resources.requests.memory"
    assert any(t.get("key") == GPU and t.get("effect") == "NoSchedule" for t in pod.get("tolerations", [])), \
        f"{where}: pod spec.tolerations has no NoSchedule toleration for {GPU}"
    shm = [v for v in pod.get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"]
    assert shm, f"{where}: pod spec.volumes has no emptyDir with medium Memory"
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    assert any(mounts.get(v["name"]) == "/dev/shm" for v in shm), \
        f"{where}: containers[0].volumeMounts does not mount the Memory emptyDir at /dev/shm"
    assert job.get("env") == "{{ env }}", f"{where}: job_configuration.env must stay '{{{{ env }}}}' (worker env)"


def test_default_render_is_a_cpu_job_with_string_env(template: dict[str, Any]) -> None:
    where = _rel(TEMPLATE)
    rendered = _render(template, {"image": "example/image:1"})
    assert not _placeholders(rendered), f"{where}: rendering with defaults leaves placeholders {_placeholders(rendered)}"
    container = _job_container(rendered)
    assert container["image"] == "example/image:1", f"{where}: rendered containers[0].image"
    assert container["resources"]["limits"][GPU] == 0, f"{where}: rendered default limits[{GPU!r}] is not 0"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}, \
        f"{where}: rendered default containers[0].resources.requests"
    assert "cpu" not in container["resources"]["limits"], f"{where}: unset cpu_limit must drop limits.cpu"
    env = container.get("env")
    assert isinstance(env, list), f"{where}: containers[0].env must be a list for the worker to prepend its env"
    for entry in env:
        # Kubernetes rejects a non-string EnvVar.value
        assert isinstance(entry.get("value", ""), str), f"{where}: rendered containers[0].env {entry} is not a string"


# ------------------------------------------------------------------------------------------ prefect.yaml


def test_prefect_yaml_project(project: dict[str, Any]) -> None:
    where = _rel(PREFECT_YAML)
    assert project.get("name") == "zssbir", f"{where}: name"
    assert str(project.get("prefect-version")) == "3.8.8", f"{where}: prefect-version"
    assert not project.get("build"), f"{where}: build steps present (the image is built outside Prefect)"
    assert not project.get("push"), f"{where}: push steps present (the image is pushed outside Prefect)"
    directories = [step["prefect.deployments.steps.set_working_directory"].get("directory")
                   for step in project.get("pull") or []
                   if "prefect.deployments.steps.set_working_directory" in step]
    assert directories == ["/app"], f"{where}: pull must set the working directory to /app, got {directories}"
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert workdirs and workdirs[-1] == directories[0], \
        f"{where}: pull directory {directories[0]} is not the WORKDIR of {_rel(DOCKERFILE)} ({workdirs})"


def test_prefect_yaml_passes_prefect_model(project: dict[str, Any]) -> None:
    models = pytest.importorskip("prefect.cli.deploy._models")
    model = models.PrefectYamlModel.model_validate(project)
    assert [d.name for d in model.deployments] == [d["name"] for d in _deployments(project)], \
        f"{_rel(PREFECT_YAML)}: deployments do not survive Prefect's prefect.yaml model"


def test_expected_deployments(project: dict[str, Any]) -> None:
    where = _rel(PREFECT_YAML)
    by_name = {d.get("name"): d for d in _deployments(project)}
    assert set(by_name) >= {"zssbir-training", "zssbir-training-multi-gpu"}, f"{where}: deployment names {set(by_name)}"
    single, multi = by_name["zssbir-training"], by_name["zssbir-training-multi-gpu"]
    for d in (single, multi):
        assert d.get("entrypoint") == "flows/training.py:training_flow", f"{where}: {d['name']}.entrypoint"
        assert d.get("work_pool", {}).get("name") == "zssbir-k8s", f"{where}: {d['name']}.work_pool.name"
        assert d.get("parameters", {}).get("dataset") == "openmoji_zs", f"{where}: {d['name']}.parameters.dataset"
    assert single["work_pool"]["job_variables"].get("image") == "zssbir-train:latest", \
        f"{where}: zssbir-training.work_pool.job_variables.image"
    assert single["work_pool"]["job_variables"].get("gpu_count") == 1, \
        f"{where}: zssbir-training.work_pool.job_variables.gpu_count"
    schedules = single.get("schedules") or []
    assert any(s.get("cron") and s.get("active", True) for s in schedules), \
        f"{where}: zssbir-training.schedules has no active cron schedule"
    jv = multi["work_pool"]["job_variables"]
    assert (jv.get("gpu_count"), jv.get("nproc_per_node")) == (4, 4), \
        f"{where}: zssbir-training-multi-gpu.work_pool.job_variables gpu_count/nproc_per_node"
    assert multi["parameters"].get("launcher") == "torchrun", f"{where}: zssbir-training-multi-gpu.parameters.launcher"
    assert single["parameters"].get("launcher", "python") == "python", \
        f"{where}: zssbir-training.parameters.launcher must be python (one GPU)"


def test_schedules_are_valid_cron(project: dict[str, Any]) -> None:
    schedules_mod = pytest.importorskip("prefect.client.schemas.schedules")
    for d in _deployments(project):
        for i, s in enumerate(d.get("schedules") or []):
            if "cron" in s:
                try:
                    schedules_mod.CronSchedule(cron=s["cron"], timezone=s.get("timezone"))
                except Exception as exc:  # pydantic ValidationError
                    pytest.fail(f"{_rel(PREFECT_YAML)}: {d['name']}.schedules[{i}] is not a valid cron: {exc}")


@pytest.mark.parametrize("index", [0, 1])
def test_entrypoint_exists_and_takes_the_parameters(project: dict[str, Any], index: int) -> None:
    # Expected to fail while flows/training.py (written separately) does not exist yet.
    deployments = _deployments(project)
    if index >= len(deployments):
        pytest.skip("fewer deployments")
    d = deployments[index]
    where = f"{_rel(PREFECT_YAML)}: {d['name']}.entrypoint"
    path, sep, func = d["entrypoint"].partition(":")
    assert sep and func, f"{where} must be '<file>:<function>'"
    source = REPO_ROOT / path
    assert source.is_file(), f"{where}: file {path} does not exist"
    tree = ast.parse(source.read_text(), filename=str(source))
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func]
    assigned = [n for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == func for t in n.targets)]
    assert defs or assigned, f"{where}: {path} defines no top-level {func!r}"
    if defs:
        args = defs[-1].args
        if args.kwarg is None:
            accepted = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
            unknown = set(d.get("parameters") or {}) - accepted
            assert not unknown, f"{_rel(PREFECT_YAML)}: {d['name']}.parameters {sorted(unknown)} are not " \
                                f"parameters of {func} in {path}"


def test_job_variables_are_declared_and_valid(project: dict[str, Any], template: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    properties = template["variables"]["properties"]
    for d in _deployments(project):
        where = f"{_rel(PREFECT_YAML)}: {d['name']}.work_pool.job_variables"
        jv = (d.get("work_pool") or {}).get("job_variables") or {}
        unknown = set(jv) - set(properties)
        assert not unknown, f"{where}: {sorted(unknown)} are not variables of {_rel(TEMPLATE)}"
        schema = {**template["variables"], "required": []}
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
                  for e in jsonschema.Draft202012Validator(schema).iter_errors(jv)]
        assert not errors, f"{where}: fail the template's variables schema: {errors}"


def test_deployments_render_to_the_intended_job(project: dict[str, Any], template: dict[str, Any]) -> None:
    for d in _deployments(project):
        where = f"{_rel(PREFECT_YAML)}: {d['name']} rendered with {_rel(TEMPLATE)}"
        jv = (d.get("work_pool") or {}).get("job_variables") or {}
        rendered = _render(template, jv)
        assert not _placeholders(rendered), f"{where}: placeholders left: {_placeholders(rendered)}"
        container = _job_container(rendered)
        assert container["image"] == jv["image"], f"{where}: containers[0].image"
        gpus = container["resources"]["limits"].get(GPU)
        assert isinstance(gpus, int) and not isinstance(gpus, bool) and gpus == jv.get("gpu_count", 0), \
            f"{where}: containers[0].resources.limits[{GPU!r}] is {gpus!r}"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert all(isinstance(v, str) for v in env.values()), f"{where}: containers[0].env has non-string values {env}"
        nproc = jv.get("nproc_per_node", template["variables"]["properties"]["nproc_per_node"]["default"])
        assert env.get("ZSSBIR_TORCHRUN_ARGS") == f"--nproc-per-node {nproc}", \
            f"{where}: containers[0].env ZSSBIR_TORCHRUN_ARGS is {env.get('ZSSBIR_TORCHRUN_ARGS')!r}"
        parameters = d.get("parameters") or {}
        if parameters.get("launcher") == "torchrun":
            # the flow hands its own nproc_per_node parameter to torchrun; the pod must have that many GPUs
            assert parameters.get("nproc_per_node") == nproc, \
                f"{where}: parameters.nproc_per_node {parameters.get('nproc_per_node')!r} != " \
                f"work_pool.job_variables.nproc_per_node {nproc!r}"
            if jv.get("gpu_count", 0) > 0:
                assert nproc == jv["gpu_count"], \
                    f"{where}: work_pool.job_variables.nproc_per_node {nproc} != gpu_count {jv['gpu_count']}"


# ------------------------------------------------------------------------------------------- Dockerfile


def test_training_dockerfile() -> None:
    where = _rel(DOCKERFILE)
    text = DOCKERFILE.read_text()
    logical = re.sub(r"\\\n", " ", text)
    froms = re.findall(r"^FROM\s+(\S+)", logical, flags=re.M)
    assert froms and froms[0].startswith("python:3.11-slim"), f"{where}: FROM is {froms}, not python:3.11-slim"
    assert re.search(r"^RUN .*apt-get install .*\bgit\b", logical, flags=re.M), f"{where}: no apt-get install git"
    assert re.search(r"^COPY \. /app\s*$", logical, flags=re.M), f"{where}: the repository is not copied to /app"
    assert re.search(r"pip install -c requirements\.lock -e \.", logical), \
        f"{where}: no 'pip install -c requirements.lock -e .'"
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", logical, flags=re.M):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    expected = {"HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
                "GX_ANALYTICS_ENABLED": "false"}
    wrong = {k: env.get(k) for k, v in expected.items() if env.get(k) != v}
    assert not wrong, f"{where}: ENV values wrong or missing: {wrong}"


# ---------------------------------------------------------------------------------- serving manifests


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_deployment_probes_ports_and_resources(path: Path) -> None:
    for dep in _of_kind(path, "Deployment"):
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), \
            f"{_rel(path)}: Deployment {name} spec.selector.matchLabels {selector} do not match template labels"
        for c in pod["spec"]["containers"]:
            where = f"{_rel(path)}: Deployment {name} container {c['name']}"
            names, numbers = _container_ports(c)
            assert 3000 in numbers, f"{where}: ports has no containerPort 3000 (BentoML's HTTP port)"
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, f"{where}: {probe} missing"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe not in c:
                    continue
                get = c[probe].get("httpGet")
                assert get, f"{where}: {probe}.httpGet missing"
                assert get.get("path") in PROBE_PATHS, \
                    f"{where}: {probe}.httpGet.path {get.get('path')!r} is not one of {sorted(PROBE_PATHS)}"
                port = get.get("port")
                assert port in names or port in numbers, \
                    f"{where}: {probe}.httpGet.port {port!r} is not a declared container port {names | numbers}"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{where}: readinessProbe.httpGet.path"
            assert c["livenessProbe"]["httpGet"]["path"] == "/livez", f"{where}: livenessProbe.httpGet.path"
            resources = c.get("resources") or {}
            requests = resources.get("requests") or {}
            assert {"cpu", "memory"} <= set(requests), f"{where}: resources.requests needs cpu and memory"
            assert resources.get("limits"), f"{where}: resources.limits missing"
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            assert env.get("BENTOML_DO_NOT_TRACK") == "True", f"{where}: env BENTOML_DO_NOT_TRACK must be 'True'"
            assert all(isinstance(v, str) for v in env.values()), f"{where}: env values must be strings: {env}"
            assert c.get("image") == "zssbir-service:latest", f"{where}: image is {c.get('image')!r}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_service_targets_a_container_port(path: Path) -> None:
    deployments = _of_kind(path, "Deployment")
    for svc in _of_kind(path, "Service"):
        name = svc["metadata"]["name"]
        selector = svc["spec"].get("selector") or {}
        matched = [d for d in deployments
                   if selector and selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
        assert matched, f"{_rel(path)}: Service {name} spec.selector {selector} matches no Deployment's pod labels"
        names: set[str] = set()
        numbers: set[int] = set()
        for d in matched:
            for c in d["spec"]["template"]["spec"]["containers"]:
                n, p = _container_ports(c)
                names |= n
                numbers |= p
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port.get("port"))
            assert target in names or target in numbers, \
                f"{_rel(path)}: Service {name} ports[{port.get('name')}].targetPort {target!r} is not a container " \
                f"port {names | numbers}"
        assert any(p.get("port") == 80 for p in svc["spec"]["ports"]), f"{_rel(path)}: Service {name} has no port 80"


def _gpu_amounts(path: Path) -> list[Any]:
    amounts = []
    for dep in _of_kind(path, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            resources = c.get("resources") or {}
            for section in ("requests", "limits"):
                if GPU in (resources.get(section) or {}):
                    amounts.append(resources[section][GPU])
    return amounts


def test_gpu_variant_requests_a_gpu_and_cpu_variant_does_not() -> None:
    gpu = _of_kind(K8S_GPU, "Deployment")
    for dep in gpu:
        for c in dep["spec"]["template"]["spec"]["containers"]:
            limit = ((c.get("resources") or {}).get("limits") or {}).get(GPU)
            assert isinstance(limit, int) and limit >= 1, \
                f"{_rel(K8S_GPU)}: Deployment {dep['metadata']['name']} container {c['name']} " \
                f"resources.limits[{GPU!r}] is {limit!r}, need an integer >= 1"
        spec = dep["spec"]["template"]["spec"]
        assert any(t.get("key") == GPU for t in spec.get("tolerations") or []) or spec.get("nodeSelector"), \
            f"{_rel(K8S_GPU)}: Deployment {dep['metadata']['name']} has neither a {GPU} toleration nor a nodeSelector"
    assert not _gpu_amounts(K8S_CPU), f"{_rel(K8S_CPU)}: resources request {GPU} in the CPU variant"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_serving_pulls_the_champion_from_the_shared_store_into_what_the_server_reads(path: Path) -> None:
    for dep in _of_kind(path, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        (init,), (server,) = spec["initContainers"], spec["containers"]
        where = f"{_rel(path)}: Deployment {dep['metadata']['name']}"
        assert init["command"][:2] == ["zssbir", "pull-champion"] and init["image"] == "zssbir-train:latest", where
        bundle = init["command"][init["command"].index("--bundle") + 1]
        init_env = {e["name"]: e for e in init["env"]}
        server_env = {e["name"]: e.get("value") for e in server["env"]}
        assert init_env["ZSSBIR_MODEL_STORE"]["valueFrom"]["configMapKeyRef"]["key"] == "url", where
        assert server_env["BENTOML_HOME"] == init_env["BENTOML_HOME"]["value"], f"{where}: not the pulled home"
        assert server_env["ZSSBIR_BUNDLE"] == bundle, f"{where}: the server does not read the pulled bundle"
        volumes = {v["name"] for v in spec["volumes"]}
        mounts = [{(m["name"], m["mountPath"]) for m in c["volumeMounts"]} for c in (init, server)]
        assert mounts[0] == mounts[1] and {name for name, _ in mounts[0]} <= volumes, where
        (mount,) = {path for _, path in mounts[0]}
        assert bundle.startswith(mount) and server_env["BENTOML_HOME"].startswith(mount), where
        assert server["args"][:3] == ["bentoml", "serve", "serving.service:SketchSearch"], where


def test_training_deployments_publish_to_the_shared_store(project: dict[str, Any]) -> None:
    for deployment in project["deployments"]:
        env = deployment["work_pool"]["job_variables"].get("env", {})
        assert "ZSSBIR_MODEL_STORE" in env, f"{deployment['name']}: no ZSSBIR_MODEL_STORE in job_variables.env"
