"""The production shape of docker-compose.yml, the Dockerfile and .dockerignore.

No Docker engine is needed: the compose file is read as YAML, every command it runs is checked
against the real CLI and ASGI factories, and, when a `docker-compose` binary is on PATH, Compose
itself validates the file.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from services.cli import main as bantin_cli
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

INFRA = {"redis", "postgres", "web"}  # stock images: Redis, PostgreSQL, nginx in front
MONITORING = {"prometheus", "grafana"}  # the optional `monitoring` profile
SECRETS = "secrets"  # one-shot on the PostgreSQL image: makes the database password
WORKERS = {"render", "feed", "deliver"}  # deliver: WebSub pushes
APPS = {"migrate", "ingest", "gateway", "reconciler"} | WORKERS
# The optional `s3` profile: MinIO, and a one-shot that makes its bucket.
OBJECT_STORE, BUCKET_MAKER = "minio", "minio-bucket"
S3_PROFILE = {OBJECT_STORE, BUCKET_MAKER}
ONE_SHOT = {"migrate", SECRETS, BUCKET_MAKER}
LONG_RUNNING = (INFRA | APPS | MONITORING | S3_PROFILE) - ONE_SHOT
# What the apps read beside BANTIN_*: the database password file and the bucket's credentials.
APP_NON_BANTIN = {"PGPASSFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
SECRETS_DIR = "/run/bantin-secrets"
# Only nginx: the site on 8000, the ingest API on 8001 (deploy/nginx.conf's second server).
PUBLISHED = {
    "web": ["8000:80", "8001:8001"],
    # Loopback only: no authentication in front of them.
    "prometheus": ["127.0.0.1:9090:9090"],
    "grafana": ["127.0.0.1:3000:3000"],
}
HTTP_APPS = {"gateway": "8000", "ingest": "8001"}  # our uvicorn services and their ports
SITE_MOUNT = "/data/site"

_VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _with_defaults(value: str) -> str:
    """Compose interpolation with nothing set: `${X:-d}` is d, `${X:?msg}` a placeholder."""
    return _VARIABLE.sub(lambda m: m.group(3) if m.group(2) == "-" else "secret", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(COMPOSE_FILE.read_text(), Loader=_StrictLoader)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "write environment as a mapping"
    return {key: str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    assert isinstance(depends, dict), "use the long depends_on form, with conditions"
    return {name: spec["condition"] for name, spec in depends.items()}


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def test_services_are_the_production_set(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == INFRA | APPS | MONITORING | {SECRETS} | S3_PROFILE
    # Monitoring and object storage are opt-in: a plain `docker compose up` starts neither.
    profiled = {name for name, service in services.items() if service.get("profiles")}
    assert profiled == MONITORING | S3_PROFILE
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
    for name in S3_PROFILE:
        assert services[name]["profiles"] == ["s3"], name


def test_compose_file_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_infrastructure_images(services: dict[str, dict[str, Any]]) -> None:
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["postgres"]["image"] == "postgres:16-alpine"


def test_monitoring_scrapes_every_process_with_the_shipped_files(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = [str(v) for v in services["prometheus"]["volumes"]]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = yaml.safe_dump(config["scrape_configs"])
    for name in ("ingest:8001", "gateway:8000", "reconciler:9100", "render", "feed"):
        assert name in targets, name
    assert _env(services["render"])["BANTIN_METRICS_PORT"] == "9100"
    assert _env(services["render"])["BANTIN_METRICS_HOST"] == "0.0.0.0"
    dashboards = [str(v) for v in services["grafana"]["volumes"]]
    assert any(v.startswith("./deploy/grafana:") for v in dashboards), dashboards
    assert (ROOT / "deploy" / "grafana" / "bantin.json").is_file()


def test_every_app_service_runs_the_one_image(services: dict[str, dict[str, Any]]) -> None:
    builds = {repr(services[name].get("build")) for name in APPS}
    images = {services[name].get("image") for name in APPS}
    assert len(builds) == 1 and len(images) == 1, (builds, images)
    build = services["ingest"]["build"]
    context = build if isinstance(build, str) else build["context"]
    assert context == "."
    assert (ROOT / "Dockerfile").is_file()


def test_workers_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    for name in WORKERS:
        assert "container_name" not in services[name], name
        assert "ports" not in services[name], name


def test_only_nginx_publishes_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        ports = [_with_defaults(str(port)) for port in service.get("ports", [])]
        assert ports == PUBLISHED.get(name, []), f"{name} publishes {ports}"
    # Ingest is reached through nginx only, never raw on 0.0.0.0:8001.
    assert "ports" not in services["ingest"] and "expose" not in services["ingest"]
    assert all("container_name" not in service for service in services.values())


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert services[name]["restart"] == "unless-stopped", name


def test_healthchecks_probe_the_right_thing(services: dict[str, dict[str, Any]]) -> None:
    assert "redis-cli ping" in _healthcheck_text(services["redis"])
    assert "pg_isready" in _healthcheck_text(services["postgres"])
    for name, port in HTTP_APPS.items():
        assert f"127.0.0.1:{port}/healthz" in _healthcheck_text(services[name]), name
    for name in WORKERS:
        text = _healthcheck_text(services[name])
        assert "celery -A services.cli.worker inspect ping" in text, name
        # Only this container's node counts; `$$` is compose's escape for the shell's `$`.
        assert "@$$HOSTNAME" in text, name


def test_migrate_is_a_one_shot_the_apps_wait_for(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["bantin", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert "healthcheck" not in migrate
    assert _depends_on(migrate) == {"postgres": "service_healthy"}
    for name in APPS - ONE_SHOT - {"gateway"}:
        assert _depends_on(services[name]) == {
            "migrate": "service_completed_successfully",
            "postgres": "service_healthy",
            "redis": "service_healthy",
        }, name
    # The read side serves files only: it must not go down with the write side.
    assert not _depends_on(services["gateway"])


def test_site_volume_is_shared_and_read_only_for_the_gateway(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert "site" in compose["volumes"]
    assert f"site:{SITE_MOUNT}:ro" in services["gateway"]["volumes"]
    for name in WORKERS:
        assert f"site:{SITE_MOUNT}" in services[name]["volumes"], name
    for name in APPS - WORKERS - {"gateway"}:  # no site; the database password only
        assert services[name]["volumes"] == [f"secrets:{SECRETS_DIR}:ro"], name


def test_stateful_services_keep_their_data_in_named_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    named = set(compose["volumes"])
    for name, target in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        mounts = [str(volume).split(":") for volume in services[name]["volumes"]]
        assert any(m[0] in named and m[1] == target for m in mounts), name


def test_the_database_password_is_generated_when_not_given(
    services: dict[str, dict[str, Any]],
) -> None:
    secrets = services[SECRETS]
    assert secrets["image"] == services["postgres"]["image"]  # no extra image to pull
    assert secrets["restart"] == "no"
    # Given: used as it is; not given: never a fixed default anyone could guess.
    assert _env(secrets)["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"
    script = secrets["command"][0]
    assert "/dev/urandom" in script and "[ ! -s postgres_password ]" in script
    postgres = services["postgres"]
    assert "POSTGRES_PASSWORD" not in _env(postgres)
    assert _env(postgres)["POSTGRES_PASSWORD_FILE"] == f"{SECRETS_DIR}/postgres_password"
    assert _depends_on(postgres) == {SECRETS: "service_completed_successfully"}
    # Every app that talks to the database reads libpq's password file from the volume.
    for name in APPS - {"gateway"}:
        mounts = [str(v) for v in services[name]["volumes"]]
        assert f"secrets:{SECRETS_DIR}:ro" in mounts, name
        assert _env(services[name])["PGPASSFILE"] == f"{SECRETS_DIR}/pgpass", name


def test_app_environment_points_at_the_compose_services(
    services: dict[str, dict[str, Any]],
) -> None:
    # The web apps add only prometheus-client's multiprocess directory (uvicorn --workers),
    # and ingest alone holds the operators' token.
    web_only = {"PROMETHEUS_MULTIPROC_DIR", "BANTIN_OPERATOR_TOKEN", "BANTIN_TRUSTED_PROXIES"}
    for ingest_only in ("BANTIN_OPERATOR_TOKEN", "BANTIN_TRUSTED_PROXIES"):
        holders = [name for name in sorted(APPS) if ingest_only in _env(services[name])]
        assert holders == ["ingest"], ingest_only
    envs = [
        {k: v for k, v in _env(services[name]).items() if k not in web_only}
        for name in sorted(APPS)
    ]
    assert all(env == envs[0] for env in envs), "every app service shares one environment"
    env = envs[0]
    assert all(key.startswith("BANTIN_") or key in APP_NON_BANTIN for key in env), sorted(env)
    database = urlsplit(env["BANTIN_DATABASE_URL"])
    assert database.scheme == "postgresql+psycopg"
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.password is None  # it is in PGPASSFILE, never in the environment
    postgres = _env(services["postgres"])
    assert (database.username, database.path) == (
        postgres["POSTGRES_USER"],
        f"/{postgres['POSTGRES_DB']}",
    )
    redis = urlsplit(env["BANTIN_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert env["BANTIN_DATA_DIR"] == "/data"
    assert env["BANTIN_INGEST_HOST"] == env["BANTIN_GATEWAY_HOST"] == "0.0.0.0"
    assert env["BANTIN_PUBLIC_URL"].startswith("${BANTIN_PUBLIC_URL:-")


def _bantin_context(argv: list[str]) -> click.Context:
    """Parse a `bantin ...` command line the way the real CLI would, without running it."""
    command: click.Command = bantin_cli
    parent: click.Context | None = None
    name, tokens = "bantin", list(argv)
    while isinstance(command, click.Group):
        parent = click.Context(command, info_name=name, parent=parent)
        assert tokens, f"{argv}: missing subcommand"
        name, *tokens = tokens
        sub = command.get_command(parent, name)
        assert sub is not None, f"{argv}: no command {name!r}"
        command = sub
    return command.make_context(name, tokens, parent=parent)


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "exec form, so signals reach the process"
    return [_with_defaults(str(part)) for part in command]


def test_commands_name_real_cli_commands(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "migrate": ("upgrade", {}),
        "render": ("worker", {"kind": "render"}),
        "feed": ("worker", {"kind": "feed"}),
        "deliver": ("worker", {"kind": "deliver"}),
        "reconciler": ("reconciler", {}),
    }
    for name, (command_name, params) in expected.items():
        argv = _command(services[name])
        assert argv[0] == "bantin", name
        context = _bantin_context(argv[1:])
        assert context.command.name == command_name, name
        assert params.items() <= context.params.items(), (name, context.params)


def test_http_services_run_the_uvicorn_factories(services: dict[str, dict[str, Any]]) -> None:
    for name, port in HTTP_APPS.items():
        argv = _command(services[name])
        assert argv[:4] == ["python", "-m", "uvicorn", "--factory"], name
        module_name, _, attribute = argv[4].partition(":")
        assert module_name == f"services.{name}.app", name
        assert callable(getattr(importlib.import_module(module_name), attribute)), name
        assert argv[argv.index("--host") + 1] == "0.0.0.0", name
        assert argv[argv.index("--port") + 1] == port, name
        # The head-size cap and read deadlines uvicorn lacks (services/bounded_http.py).
        protocol = argv[argv.index("--http") + 1]
        module_name, _, attribute = protocol.partition(":")
        assert protocol == "services.bounded_http:BoundedHttpToolsProtocol", name
        assert hasattr(importlib.import_module(module_name), attribute), name


def test_dockerfile_builds_a_small_non_root_image() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    # The base is a build argument (the offline compose test passes a local image); its
    # default, what users with a registry get, is the public slim image.
    base_args = [line for line in lines if line.startswith("ARG BASE_IMAGE=")]
    assert base_args == ["ARG BASE_IMAGE=python:3.11-slim"]
    assert stages[-1].split()[1] == "${BASE_IMAGE}"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [line for line in lines if line.startswith("WORKDIR ")][-1] == "WORKDIR /app"
    text = "\n".join(lines)
    assert "[test]" not in text and "[dev]" not in text, "no dev extras in the image"


def test_dockerignore_keeps_the_context_small() -> None:
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".git", ".venv", "var", ".pytest_cache", ".mypy_cache", ".ruff_cache"):
        assert required in entries, required


def _docker_compose(
    *args: str, password: str | None, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose binary not on PATH; Compose's own validation skipped")
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    env.pop("POSTGRES_PASSWORD", None)
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    empty_env_file = tmp_path / "empty.env"  # so a local .env cannot change the outcome
    empty_env_file.write_text("")
    return subprocess.run(
        [binary, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    result = _docker_compose("config", "-q", password="x", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_docker_compose_accepts_the_file_as_shipped(tmp_path: Path) -> None:
    """No .env, no POSTGRES_PASSWORD: a newcomer's first `docker compose up` must work."""
    result = _docker_compose("config", "-q", password=None, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_env_example_names_only_variables_the_compose_file_reads() -> None:
    example = (ROOT / ".env.example").read_text()
    names = {
        line.lstrip("# ").split("=", 1)[0]
        for line in example.splitlines()
        if re.match(r"^#? ?[A-Z_]+=", line)
    }
    read = {match.group(1) for match in _VARIABLE.finditer(COMPOSE_FILE.read_text())}
    assert names, "the example sets nothing"
    assert names <= read | {"COMPOSE_PROFILES"}, names - read
    assert "POSTGRES_PASSWORD" in names


def test_nginx_in_front_serves_the_site_read_only_and_reaches_the_gateway(
    services: dict[str, dict[str, Any]],
) -> None:
    web = services["web"]
    # The nginx image renders templates/*.template into NGINX_ENVSUBST_OUTPUT_DIR at start,
    # filling in only the BANTIN_* names (nginx's own $variables stay).
    assert "./deploy/nginx.conf:/etc/nginx/templates/nginx.conf.template:ro" in web["volumes"]
    env = _env(web)
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert env["NGINX_ENVSUBST_FILTER"] == "^BANTIN_"
    assert {"BANTIN_PUBLIC_URL", "BANTIN_INGEST_PUBLIC_URL"} <= env.keys()
    assert any(v.startswith("site:") and v.endswith(":ro") for v in web["volumes"])
    assert "gateway" in _depends_on(web)
    assert "healthcheck" in web
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server gateway:8000" in conf


def _server_blocks(conf: str) -> list[str]:
    """The text of each top-level ``server { ... }`` in the http block, comments dropped."""
    text = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    blocks, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "{":
            if depth == 1 and text[:index].rstrip().endswith("server"):
                start = index
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 1 and start:
                blocks.append(text[start : index + 1])
                start = 0
    return blocks


def _size(value: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def test_nginx_fronts_ingest_with_its_body_limit(services: dict[str, dict[str, Any]]) -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    (ingest,) = [block for block in _server_blocks(conf) if "ingest:8001" in block]
    assert "listen *:8001;" in ingest  # the port `web` publishes as 8001
    limits = re.findall(r"client_max_body_size\s+(\w+);", ingest)
    # nginx refuses exactly what ingest would: the limit is ingest's, as compose runs it.
    assert "BANTIN_MAX_REQUEST_BYTES" not in _env(services["ingest"])
    assert [_size(limit) for limit in limits] == [Settings().max_request_bytes]
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout",
                      "keepalive_timeout", "large_client_header_buffers"):  # fmt: skip
        assert re.search(rf"^\s*{directive}\s", conf, re.MULTILINE), directive
    # The site must come up without ingest: ingest is resolved per request, not at start.
    assert "ingest" not in _depends_on(services["web"])
    assert "resolver 127.0.0.11" in ingest


def test_ingest_trusts_only_its_private_network_as_proxies(
    services: dict[str, dict[str, Any]],
) -> None:
    """For the console's sign-in limit per address: nginx, on the compose network, names the
    client; ingest publishes no port, so nothing outside that network reaches it, and nginx
    passes the address it saw alone (a client's own X-Forwarded-For never reaches ingest)."""
    value = _env(services["ingest"])["BANTIN_TRUSTED_PROXIES"]
    settings = Settings(trusted_proxies=value)
    assert all(network.is_private for network in settings.trusted_networks)
    assert [str(n) for n in settings.trusted_networks] == [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]  # fmt: skip
    assert "ports" not in services["ingest"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    (ingest,) = [block for block in _server_blocks(conf) if "ingest:8001" in block]
    assert re.findall(r"proxy_set_header X-Forwarded-For (\S+);", ingest) == ["$remote_addr"]


def test_the_s3_profile_runs_minio_and_the_apps_follow_the_storage_setting(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Unset, BANTIN_STORAGE_URL keeps the `site` volume; the profile's MinIO is what the
    header's URL names, with the apps' own credentials, and its bucket is made by a one-shot
    that waits for MinIO to be healthy."""
    from shared.storage import parse_storage_url

    for name in APPS:
        env = _env(services[name])
        assert _with_defaults(env["BANTIN_STORAGE_URL"]) == Settings().storage_url == "", name
        assert env["AWS_ACCESS_KEY_ID"] == "${AWS_ACCESS_KEY_ID:-}", name
        assert env["AWS_SECRET_ACCESS_KEY"] == "${AWS_SECRET_ACCESS_KEY:-}", name
    minio = services[OBJECT_STORE]
    assert minio["image"].startswith("minio/minio:RELEASE.")  # pinned, never :latest
    assert minio["command"] == ["server", "/data"]
    assert "minio-data:/data" in minio["volumes"]
    assert _healthcheck_text(minio) == "CMD mc ready local"
    for name in S3_PROFILE:
        env = _env(services[name])
        assert env["MINIO_ROOT_USER"] == "${AWS_ACCESS_KEY_ID:-}", name
        assert env["MINIO_ROOT_PASSWORD"] == "${AWS_SECRET_ACCESS_KEY:-}", name
    maker = services[BUCKET_MAKER]
    assert maker["image"].startswith("minio/mc:RELEASE.")
    assert _depends_on(maker) == {OBJECT_STORE: "service_healthy"}
    assert maker["restart"] == "no"
    script = maker["command"][0]
    assert "mc mb --ignore-existing" in script and "mc anonymous set download" in script
    header = COMPOSE_FILE.read_text().split("\nservices:", 1)[0]
    url = re.search(r"BANTIN_STORAGE_URL=(s3://\S+)", COMPOSE_FILE.read_text())
    assert url is not None and "BANTIN_STORAGE_URL" in header
    location = parse_storage_url(url.group(1))
    assert location.endpoint == "http://minio:9000"
    assert location.bucket == _with_defaults(_env(maker)["BUCKET"])
    # Compose itself accepts the profile with the bucket configured.
    result = _docker_compose("--profile", "s3", "config", "-q", password=None, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


OFFLINE_OVERRIDE = ROOT / "deploy" / "compose" / "offline.yml"


def test_the_offline_override_changes_only_where_images_come_from(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """deploy/compose/offline.yml (the offline compose test, tests/compose/) must not fork the
    production file: app services get only build args, Redis, PostgreSQL and nginx only a
    local image, the command standing in for the official image's entrypoint and its script."""
    override = yaml.load(OFFLINE_OVERRIDE.read_text(), Loader=_StrictLoader)["services"]
    assert set(override) <= set(services)
    for name in APPS:
        assert set(override[name]) == {"build"}, name
        assert set(override[name]["build"]["args"]) == {"BASE_IMAGE"}, name
    for name in INFRA | {SECRETS}:
        assert set(override[name]) <= {"image", "command", "volumes"}, name
        assert "BANTIN_OFFLINE_DEBIAN_IMAGE" in override[name]["image"], name
    for name in ("postgres", "web"):
        (mount,) = override[name]["volumes"]
        script = mount.split(":")[0]
        assert (ROOT / script).is_file() and mount.endswith(":ro"), mount
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose binary not on PATH; Compose's own validation skipped")
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env |= {"BANTIN_OFFLINE_DEBIAN_IMAGE": "d:1", "BANTIN_OFFLINE_PYTHON_IMAGE": "p:1"}
    env |= {"SITE_PORT": "127.0.0.1:18080", "API_PORT": "127.0.0.1:18081"}
    result = subprocess.run(
        [binary, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE),
         "-f", str(OFFLINE_OVERRIDE), "config"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)["services"]
    # Published on loopback only (what docker-compose 1.29 prints: "ip:port:target/proto").
    ports = [str(port) for port in merged["web"]["ports"]]
    assert ports == ["127.0.0.1:18080:80/tcp", "127.0.0.1:18081:8001/tcp"], ports
    assert merged["render"]["build"]["args"] == {"BASE_IMAGE": "p:1"}
    # Production healthchecks and dependencies are kept.
    assert merged["postgres"]["healthcheck"]["test"] == services["postgres"]["healthcheck"]["test"]
    assert merged["redis"]["image"] == "d:1"
