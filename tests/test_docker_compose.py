"""The Docker files, checked without a Docker engine.

- docker-compose.yml parses, its dependency graph is sound, and every acme-mv
  command it runs (service commands, shell one-liners, healthchecks) is a real
  acme-mv command: ``acme-mv <argv> --help`` exits 0 in-process.
- The Dockerfile installs this project with the README's tool (pip), copies
  everything the wheel needs, runs as a non-root user with ``acme-mv`` as its
  entrypoint.
- The documented export example writes into the ``./exports`` mount.
- The ``source-init`` one-shot, run against a real PostgreSQL: it loads once,
  keeps the rows on a restart, redoes an interrupted load and fails (non-zero,
  one line) on a wrong password or a damaged schema.
- The wheel, installed into a clean virtual environment, runs
  ``acme-mv migrate --sql`` from the installed package alone.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from tests.support.cli_runner import child_env, run

Point = Callable[..., None]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
DOCKER_DOC = ROOT / "docs" / "deploy-cursor-sync.md"

SHELL_OPERATORS = {";", "&&", "||", "|", "&", "(", ")"}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "exec", "do", "done", "while", "until", "!"}
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation: ``env``'s values, else the defaults (else empty); ``$$``
    is ``$``."""
    values = env or {}
    text = _VARIABLE.sub(
        lambda m: values.get(m["name"]) or m["default"] or "", text.replace("$$", "\0")
    )
    return text.replace("\0", "$")


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell one-liner, keywords like ``if``/``exec`` dropped."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            commands.append([])
        elif not commands[-1] and token in SHELL_KEYWORDS:
            continue
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def acme_mv_argvs(argv: list[str]) -> list[list[str]]:
    """The acme-mv invocations in a container's argv (direct or through ``sh -c``)."""
    argv = [interpolate(a) for a in argv]
    if len(argv) >= 3 and Path(argv[0]).name in {"sh", "bash"} and argv[1] == "-c":
        return [c[1:] for c in shell_commands(argv[2]) if c[0] == "acme-mv"]
    if argv and argv[0] == "acme-mv":
        return [argv[1:]]
    return []


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def runs_our_image(service: dict[str, Any]) -> bool:
    return "build" in service


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def image_argv() -> tuple[list[str], list[str]]:
    """The image's ENTRYPOINT and CMD (exec form)."""
    import json

    found = {
        ins: json.loads(args)
        for ins, args in dockerfile_instructions()
        if ins in {"ENTRYPOINT", "CMD"}
    }
    return found.get("ENTRYPOINT", []), found.get("CMD", [])


def invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `acme-mv`) for every acme-mv command docker-compose.yml runs."""
    entrypoint, cmd = image_argv()
    found: list[tuple[str, list[str]]] = []
    for name, service in compose()["services"].items():
        if not runs_our_image(service):
            continue
        ep = as_list(service["entrypoint"]) if "entrypoint" in service else entrypoint
        command = as_list(service["command"]) if "command" in service else cmd
        for argv in acme_mv_argvs(ep + command):
            found.append((name, argv))
        health = as_list(service.get("healthcheck", {}).get("test"))
        if health[:1] in (["CMD"], ["CMD-SHELL"]):
            health = ["sh", "-c", health[1]] if health[0] == "CMD-SHELL" else health[1:]
            for argv in acme_mv_argvs(health):
                found.append((f"{name} healthcheck", argv))
    return found


def test_compose_parses_and_has_the_services() -> None:
    services = compose()["services"]
    assert {
        "source-db",
        "source-init",
        "simulator",
        "warehouse-db",
        "warehouse-migrate",
        "acme-mv",
    } <= set(services)
    assert "wal_level=logical" in as_list(services["source-db"]["command"])
    for db in ("source-db", "warehouse-db"):
        assert services[db]["image"].startswith("postgres:15")
        assert services[db]["healthcheck"]["test"][1] == "pg_isready"


def test_the_command_parser_finds_every_acme_mv_command() -> None:
    found = {(where, " ".join(argv)) for where, argv in invocations()}
    assert ("source-init", "sample load --orders 100000 --if-empty") in found
    assert ("simulator", "sample simulate --rate 20") in found
    assert ("warehouse-migrate", "migrate") in found
    assert ("acme-mv", "run --interval 10s") in found
    assert ("acme-mv healthcheck", "status --max-age 60s") in found


def test_shell_commands_split_on_operators_and_keywords() -> None:
    script = "if acme-mv a 'b c'; then exec acme-mv d --e 1 && echo x; else echo 'y; z'; fi"
    assert shell_commands(script) == [
        ["acme-mv", "a", "b c"],
        ["acme-mv", "d", "--e", "1"],
        ["echo", "x"],
        ["echo", "y; z"],
    ]
    assert interpolate("--orders ${N:-5} $${HOME} ${UNSET}") == "--orders 5 ${HOME} "
    assert interpolate("--orders ${N:-5}", {"N": "7"}) == "--orders 7"


@pytest.mark.parametrize(
    ("where", "argv"), invocations(), ids=[f"{w}: {' '.join(a)}" for w, a in invocations()]
)
def test_every_compose_command_is_a_real_acme_mv_command(where: str, argv: list[str]) -> None:
    res = run(*argv, "--help")
    assert res.exit_code == 0, f"{where}: `acme-mv {' '.join(argv)}` is not a command: {res.stderr}"
    assert "Usage" in res.stdout


def test_compose_dependencies_are_sound() -> None:
    services = compose()["services"]
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in allowed
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy; it has no healthcheck"
                )
            if spec["condition"] == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", (
                    f"{dep} is a one-shot; it must not restart"
                )


def test_every_acme_mv_service_has_both_urls_and_no_hardcoded_password() -> None:
    for name, service in compose()["services"].items():
        env = service.get("environment", {})
        if runs_our_image(service):
            assert {"ACME_MV_DATABASE_URL", "ACME_MV_SOURCE_URL"} <= set(env), name
        for key, value in env.items():
            if "PASSWORD" in key or "_URL" in key:
                # every secret is a ${VAR:-local default}, never a literal
                assert "${" in str(value) and "PASSWORD" in str(value), (
                    f"{name}.{key} has a literal secret"
                )


def service_argv(name: str, env: dict[str, str] | None = None) -> list[str]:
    """The one acme-mv command a service runs (argv after ``acme-mv``), ``env`` interpolated."""
    entrypoint, cmd = image_argv()
    service = compose()["services"][name]
    ep = as_list(service["entrypoint"]) if "entrypoint" in service else entrypoint
    command = as_list(service["command"]) if "command" in service else cmd
    found = acme_mv_argvs([interpolate(a, env) for a in ep + command])
    assert len(found) == 1, f"{name} runs {found}"
    return found[0]


#: a small sample for the source-init tests (the compose default is 100,000)
SMALL_SAMPLE = {"SAMPLE_ORDERS": "30"}


def orders_on(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM operations.orders").fetchone()
    assert row is not None
    return int(row[0])


def test_source_init_is_one_acme_mv_command_without_a_shell() -> None:
    """A shell guard (``if init; then load; else keep; fi``) swallowed every failure."""
    service = compose()["services"]["source-init"]
    assert "entrypoint" not in service
    assert service_argv("source-init", SMALL_SAMPLE) == [
        "sample",
        "load",
        "--orders",
        "30",
        "--if-empty",
    ]


def test_source_init_loads_once_and_keeps_the_rows_on_a_restart(
    empty_url: str, cli_env: Point
) -> None:
    cli_env(source_url=empty_url)
    first = run(*service_argv("source-init", SMALL_SAMPLE))
    assert first.exit_code == 0, first.stderr
    assert orders_on(empty_url) == 30
    again = run(*service_argv("source-init", SMALL_SAMPLE))  # docker compose up, once more
    assert again.exit_code == 0, again.stderr
    assert "nothing: the tables already hold rows" in again.stderr
    assert orders_on(empty_url) == 30


def test_source_init_redoes_a_load_that_was_interrupted(source_url: str, cli_env: Point) -> None:
    """The load is one transaction: after a kill the schema is there and empty (or absent)."""
    assert orders_on(source_url) == 0
    cli_env(source_url=source_url)
    res = run(*service_argv("source-init", SMALL_SAMPLE))
    assert res.exit_code == 0, res.stderr
    assert orders_on(source_url) == 30


def test_source_init_fails_on_a_wrong_password(password_role_url: str, cli_env: Point) -> None:
    cli_env(source_url=make_conninfo(password_role_url, password="not-the-source-password"))
    res = run(*service_argv("source-init", SMALL_SAMPLE))
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "password authentication failed" in lines[0], res.stderr
    assert "not-the-source-password" not in res.stderr


def test_source_init_fails_on_a_damaged_schema(source_url: str, cli_env: Point) -> None:
    with psycopg.connect(source_url) as conn:
        conn.execute("DROP TABLE operations.order_items")
    cli_env(source_url=source_url)
    res = run(*service_argv("source-init", SMALL_SAMPLE))
    assert res.exit_code == 1
    assert "has no table order_items" in res.stderr


def test_the_compose_file_points_to_docs_that_exist() -> None:
    pointers = re.findall(r"\bdocs/[\w./-]+\.md", COMPOSE.read_text())
    assert pointers, "docker-compose.yml points to no documentation"
    for pointer in pointers:
        assert (ROOT / pointer).is_file(), (
            f"docker-compose.yml points to {pointer}, which does not exist"
        )


def exports_mount() -> tuple[str, str]:
    service = compose()["services"]["acme-mv"]
    for volume in service.get("volumes", []):
        host, _, container = str(volume).partition(":")
        if host.rstrip("/") == "./exports":
            return host, container.split(":")[0]
    raise AssertionError("the acme-mv service does not mount ./exports")


def documented_export_commands() -> list[list[str]]:
    """`docker compose run ... acme-mv export ...` lines of DOCKER_DOC, as acme-mv argv."""
    found = []
    for line in DOCKER_DOC.read_text().splitlines():
        line = line.strip().removeprefix("$ ")
        if not line.startswith("docker compose run"):
            continue
        for command in shell_commands(line):
            if command[:3] != ["docker", "compose", "run"] or "acme-mv" not in command:
                continue
            argv = command[command.index("acme-mv") + 1 :]
            if argv[:1] == ["export"]:
                found.append(argv)
    return found


def test_the_documented_export_writes_into_the_exports_mount() -> None:
    _, container = exports_mount()
    commands = documented_export_commands()
    assert commands, (
        "docs/deploy-cursor-sync.md shows no `docker compose run ... acme-mv export` example"
    )
    workdirs = [args for ins, args in dockerfile_instructions() if ins == "WORKDIR"]
    for argv in commands:
        if "--output-dir" in argv:
            assert argv[argv.index("--output-dir") + 1].rstrip("/") == container.rstrip("/"), argv
        else:  # writes to the working directory, which must be the mount
            assert workdirs[-1].rstrip("/") == container.rstrip("/"), argv
        res = run(*argv, "--help")
        assert res.exit_code == 0, res.stderr


def pip_install(tokens: list[str]) -> tuple[str, list[str], list[str]] | None:
    """(tool, options, projects) of a ``pip install`` command, tool normalized (``python
    -m pip``)."""
    if "install" not in tokens:
        return None
    at = tokens.index("install")
    tool = [Path(tokens[0]).name.rstrip("0123456789.")] + tokens[1:at]
    if "pip" not in tool and not tool[0].startswith("pip"):
        return None
    options = [t for t in tokens[at + 1 :] if t.startswith("-")]
    projects = [re.sub(r"\[.*\]$", "", t) for t in tokens[at + 1 :] if not t.startswith("-")]
    return " ".join(tool), options, projects


def readme_install() -> tuple[str, list[str], list[str]]:
    """The Makefile's (README's) install of this project."""
    for line in MAKEFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        tokens = shlex.split(line.strip().replace("$(BIN)/", ""))
        found = pip_install(tokens)
        if found and "." in found[2] and "-e" in found[1]:
            return found
    raise AssertionError("no `pip install -e .` line in the Makefile")


def dockerfile_install() -> tuple[str, list[str], list[str]]:
    for ins, args in dockerfile_instructions():
        if ins != "RUN":
            continue
        for command in shell_commands(args):
            found = pip_install(command)
            if found:
                return found
    raise AssertionError("the Dockerfile has no pip install")


def test_the_dockerfile_installs_this_project_the_readme_way() -> None:
    tool, options, projects = dockerfile_install()
    readme_tool, _, readme_projects = readme_install()
    assert tool == readme_tool == "python -m pip"
    assert projects == readme_projects == ["."]
    # the documented differences: no editable install, no test extra
    assert "-e" not in options and "--editable" not in options
    install_line = next(a for i, a in dockerfile_instructions() if i == "RUN" and "pip" in a)
    assert "[test]" not in install_line


def test_the_dockerfile_copies_what_the_wheel_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {
        "pyproject.toml",
        project["project"]["readme"],
        *wheel["packages"],
        *wheel["force-include"],
    }
    copied: set[str] = set()
    for ins, args in dockerfile_instructions():
        if ins == "COPY":
            copied.update(p.rstrip("/") for p in shlex.split(args)[:-1])
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    ignored = {
        line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
    }
    assert not needed & ignored


def test_the_image_runs_acme_mv_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for ins, args in instructions if ins == "USER"]
    assert users and users[-1] not in {"root", "0"}
    entrypoint, cmd = image_argv()
    assert entrypoint == ["acme-mv"]
    res = run(*cmd)  # `docker run acme-mv` with no arguments
    assert res.exit_code == 0, res.stderr
    assert "Usage" in res.stdout


@pytest.mark.slow
def test_the_wheel_alone_runs_migrate_sql(tmp_path: Path) -> None:
    """pip wheel + a clean venv: the packaged migrations are found without the checkout."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip_env = child_env()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        env=pip_env,
    )
    (wheel,) = wheels.glob("acme_mv-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        env=pip_env,
    )
    done = subprocess.run(
        [str(venv / "bin" / "acme-mv"), "migrate", "--sql"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=pip_env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE staging.orders" in done.stdout
    assert done.stdout.rstrip().endswith("COMMIT;")
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from acme_mv import paths; print(paths.data_root())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
