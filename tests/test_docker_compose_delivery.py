"""The delivery parts of docker-compose.yml: a dashboard on a published port, and the runner's
mail configured by an optional environment file (no secret in the compose file)."""

from __future__ import annotations

from tests.test_docker_compose import ROOT, compose, interpolate, invocations


def test_the_dashboard_service_serves_on_a_published_port() -> None:
    service = compose()["services"]["dashboard"]
    assert "build" in service  # our image
    assert ("dashboard", ["serve", "--host", "0.0.0.0", "--port", "8765"]) in invocations()
    assert [interpolate(p) for p in service["ports"]] == ["127.0.0.1:8765:8765"]
    assert (
        service["depends_on"]["warehouse-migrate"]["condition"] == "service_completed_successfully"
    )
    assert service["env_file"] == [{"path": "./dashboard.env", "required": False}]


def test_the_runner_mails_when_its_environment_file_says_so() -> None:
    service = compose()["services"]["acme-mv"]
    assert service["env_file"] == [{"path": "./mail.env", "required": False}]
    # the command is unchanged: --mail-at/--mail-to come from ACME_MV_MAIL_AT/ACME_MV_MAIL_TO
    assert ("acme-mv", ["run", "--interval", "10s"]) in invocations()
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "mail.env" in gitignore and "dashboard.env" in gitignore
