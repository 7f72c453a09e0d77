"""The recipes in deploy/ run the real worker command, and their manifests hold together.

No container runtime, cluster or Slurm here: the Dockerfile is read instruction by instruction,
the Kubernetes manifests are parsed, checked against what each kind needs and against the
Kubernetes API's JSON schemas (``kubernetes-validate``, in the ``test`` extra), and the Slurm
script is run by bash as a batch task would run it, one trial on a SQLite file.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path
import re
import shlex
import subprocess
import sys
from typing import Any

import optuna
import pytest
import yaml

from trace_optuna import cli

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
TESTS = Path(__file__).parent
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = (
    "1.30.0"  # the schemas checked against: a version every current cluster serves
)


def worker_help() -> str:
    """What ``trace-optuna worker --help`` prints, run as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "trace_optuna", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_worker_command(argv: list[str]) -> None:
    """``argv`` (``trace-optuna worker ...``) names the installed command and parses with the
    real CLI; every flag it uses is in ``trace-optuna worker --help``."""
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=argv[0])
    assert script.value == "trace_optuna.cli:main", argv
    assert argv[1] == "worker", argv
    args = cli.build_parser().parse_args(argv[1:])  # SystemExit(2) on an unknown flag
    assert args.run is cli._worker
    shown = worker_help()
    for flag in (item.split("=", 1)[0] for item in argv[2:] if item.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown), flag


# -- the container image --------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def test_the_worker_image_runs_the_worker_command_as_a_user_with_secrets_from_outside() -> None:
    instructions = dockerfile_instructions()
    kinds = [kind for kind, _ in instructions]
    assert kinds[0] == "FROM"
    # The entry point is the real command (exec form: the worker gets SIGTERM itself).
    entrypoints = [
        json.loads(arguments) for kind, arguments in instructions if kind == "ENTRYPOINT"
    ]
    assert len(entrypoints) == 1 and entrypoints[0][:2] == ["trace-optuna", "worker"]
    check_worker_command([*entrypoints[0], "--study", "s", "--app", "m:app"])
    # Without arguments it shows the worker's options (the study and app are required).
    (default,) = [json.loads(arguments) for kind, arguments in instructions if kind == "CMD"]
    assert default == ["--help"]
    # Not root: a USER that is neither root nor 0, after every RUN.
    users = [(i, arguments) for i, (kind, arguments) in enumerate(instructions) if kind == "USER"]
    assert users, "the image runs as root"
    last_user, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(i < last_user for i, kind in enumerate(kinds) if kind == "RUN")
    # The storage URL and the LLM key come from the environment at run time, never the image.
    for kind, arguments in instructions:
        if kind in ("ENV", "ARG"):
            assert not re.search(r"TRACE_OPTUNA_STORAGE|_API_KEY|_TOKEN|PASSWORD", arguments)
    assert cli.STORAGE_ENV == "TRACE_OPTUNA_STORAGE"


# -- Kubernetes ----------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                document["__file__"] = path.name
                documents.append(document)
    return documents


def one(kind: str) -> dict[str, Any]:
    (found,) = [document for document in manifests() if document["kind"] == kind]
    return found


def test_the_kubernetes_manifests_hold_what_each_kind_needs() -> None:
    documents = manifests()
    assert sorted(d["kind"] for d in documents) == [
        "Deployment",
        "Job",
        "PersistentVolumeClaim",
        "Service",
    ]
    for document in documents:
        assert document["apiVersion"] and document["metadata"]["name"], document["__file__"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])

    # PostgreSQL: the Deployment's selector picks its own pods, the Service picks them too and
    # sends to a port the container opens; the data lives on the claimed volume.
    deployment, service, claim = one("Deployment"), one("Service"), one("PersistentVolumeClaim")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"]: port["containerPort"] for port in server["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in port_names
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    server_env = {item["name"]: item for item in server["env"]}

    # The workers: N at once, each running the real command, the storage URL pointing at the
    # Service with the server's user, password and database.
    job = one("Job")
    spec = job["spec"]
    assert spec["parallelism"] == spec["completions"] >= 2
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    assert pod["securityContext"]["runAsNonRoot"] is True
    (worker,) = pod["containers"]
    assert "command" not in worker  # the image's entry point: trace-optuna worker
    check_worker_command(["trace-optuna", "worker", *worker["args"]])
    env = worker["env"]
    names = [item["name"] for item in env]
    for index, item in enumerate(env):  # $(NAME) must name a variable defined before it
        for reference in re.findall(r"\$\((\w+)\)", item.get("value", "")):
            assert reference in names[:index], (item["name"], reference)
    storage = next(item["value"] for item in env if item["name"] == cli.STORAGE_ENV)
    url = re.fullmatch(r"postgresql\+psycopg://(\w+):\$\((\w+)\)@([\w.-]+):(\d+)/(\w+)", storage)
    assert url is not None, storage
    user, password_variable, host, port, database = url.groups()
    assert (host, int(port)) == (service["metadata"]["name"], service_port["port"])
    assert user == server_env["POSTGRES_USER"]["value"]
    assert database == server_env["POSTGRES_DB"]["value"]
    password = next(item for item in env if item["name"] == password_variable)
    assert (
        password["valueFrom"]["secretKeyRef"]
        == (server_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"])
    )
    assert any(name.endswith("_API_KEY") for name in names)
    for item in env:  # secrets from Secrets only
        if item["name"].endswith(("_API_KEY", "PASSWORD")):
            assert "secretKeyRef" in item["valueFrom"], item["name"]


def test_the_kubernetes_manifests_match_the_api_schemas() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is in the test extra: pip install -e '.[test]'",
    )
    for document in manifests():
        document = {key: value for key, value in document.items() if key != "__file__"}
        # strict: a field the API does not know (a typo) fails too.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misplaced_field() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is in the test extra: pip install -e '.[test]'",
    )
    job = {key: value for key, value in one("Job").items() if key != "__file__"}
    job["spec"]["template"]["spec"]["containers"][0]["arguments"] = ["--study", "x"]  # not args
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


# -- Slurm ---------------------------------------------------------------------------------


def test_the_slurm_script_runs_the_real_worker_command(tmp_path: Path) -> None:
    script = DEPLOY / "slurm" / "workers.sbatch"
    text = script.read_text()
    assert re.search(r"^#SBATCH --array=", text, re.MULTILINE)
    assert re.search(r"^#SBATCH --signal=B:TERM@\d+", text, re.MULTILINE)  # to the worker
    command = re.search(r"^exec (trace-optuna worker .*?[^\\])$", text, re.MULTILINE | re.DOTALL)
    assert command is not None
    words = shlex.split(command.group(1).replace("\\\n", " "))
    values = {"$STUDY": "s", "$APP": "m:app", "$TRIALS": "1"}
    check_worker_command([values.get(word, word) for word in words])

    # Run it as a batch task would (the #SBATCH lines are comments to bash): in a venv whose
    # trace-optuna is this checkout's, one trial of the tests' worker app on a SQLite file.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "trace-optuna").write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m trace_optuna "$@"\n'
    )
    (venv / "bin" / "trace-optuna").chmod(0o755)
    (venv / "bin" / "activate").write_text(f'PATH="{venv / "bin"}:$PATH"\n')
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TRACE_OPTUNA_STORAGE": storage,
        "STUDY": "slurm-array",
        "APP": "support_workers:app",
        "TRIALS": "1",
        "VENV": str(venv),
        "SLURM_SUBMIT_DIR": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "finished 1 trials of study 'slurm-array'" in done.stdout
    study = optuna.load_study(study_name="slurm-array", storage=storage)
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"]

    # Without the storage URL it stops at once, saying what is missing.
    del env["TRACE_OPTUNA_STORAGE"]
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "TRACE_OPTUNA_STORAGE" in done.stderr
