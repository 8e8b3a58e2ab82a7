"""The Deploy/AWS/CodeDeploy action on a local instance (bot.engine.providers.codedeploy).

Unit tests drive ``deploy`` directly on directories, one rule of the contract each
(../shared/docs/local-providers.md, "CodeDeploy"); scenario tests run Source -> a Commands build
that produces the revision bundle -> CodeDeploy through LocalCodePipeline on SQLite and
PostgreSQL, every response checked against botocore's output shapes.

Hook scripts append ``<LIFECYCLE_EVENT> <tag> ...`` lines to the file named by ``$TRACE`` (a
test-only variable passed in the scripts' environment), so a test reads which scripts ran, in
which order, with which environment.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.engine.providers import codedeploy
from bot.engine.providers.codedeploy import AppSpecError, Deployment, parse_appspec
from tests.helpers import (
    commands_action,
    commit,
    make_repo,
    pipeline,
    process_alive,
    source_action,
    wait_for,
)
from tests.shapecheck import assert_output_shape

ALL_HOOKS = (
    "ApplicationStop",
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
)
APP, GROUP = "WebApp", "Staging"


def tracing_script(tag: str, extra: str = "") -> str:
    return (
        "#!/bin/sh\n"
        f'echo "$LIFECYCLE_EVENT {tag} $DEPLOYMENT_ID $APPLICATION_NAME $DEPLOYMENT_GROUP_NAME '
        f'$DEPLOYMENT_GROUP_ID $PIPEBOT_INSTANCE_ROOT" >> "$TRACE"\n'
        f'echo "output of {tag} $LIFECYCLE_EVENT"\n'
        f"{extra}\n"
    )


def appspec(
    *,
    files: str = "  - source: site\n    destination: /var/www/html\n",
    hooks: dict[str, list[str]] | None = None,
    extra: str = "",
) -> str:
    hooks = {hook: [f"scripts/{hook}.sh"] for hook in ALL_HOOKS} if hooks is None else hooks
    text = f"version: 0.0\nos: linux\nfiles:\n{files}{extra}"
    if hooks:
        text += "hooks:\n"
        for hook, scripts in hooks.items():
            text += f"  {hook}:\n"
            for script in scripts:
                text += f"    - location: {script}\n"
    return text


def make_bundle(
    path: Path,
    *,
    tag: str,
    site: dict[str, str] | None = None,
    spec: str | None = None,
    scripts: dict[str, str] | None = None,
) -> Path:
    """A revision bundle: ``site/`` files, ``appspec.yml`` and a tracing script per hook."""
    path.mkdir(parents=True)
    for name, content in (site if site is not None else {"index.html": f"{tag}\n"}).items():
        target = path / "site" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    (path / "appspec.yml").write_text(spec if spec is not None else appspec())
    for hook in ALL_HOOKS:
        script = path / "scripts" / f"{hook}.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text((scripts or {}).get(hook, tracing_script(tag)))
        script.chmod(0o755)
    return path


class Instance:
    """One deployment group's local instance under ``tmp``, deployed to by ``deploy``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.root = codedeploy.instance_root(
            data_dir=self.data, application_name=APP, deployment_group_name=GROUP
        )
        self.trace = tmp / "trace.log"
        self.log = tmp / "action.log"
        self.count = 0

    def deploy(self, bundle: Path, *, revision: str | None = None) -> Deployment:
        self.count += 1
        return codedeploy.deploy(
            bundle=bundle,
            root=self.root,
            application_name=APP,
            deployment_group_name=GROUP,
            deployment_id=codedeploy.deployment_id(f"action-{self.count}"),
            revision=revision or f"rev-{self.count}",
            log_path=self.log,
            environment={"PATH": os.environ["PATH"], "TRACE": str(self.trace)},
        )

    def traced(self) -> list[list[str]]:
        if not self.trace.exists():
            return []
        return [line.split() for line in self.trace.read_text().splitlines()]

    def events(self) -> list[tuple[str, str]]:
        return [(line[0], line[1]) for line in self.traced()]

    def reset_trace(self) -> None:
        self.trace.unlink(missing_ok=True)

    def file(self, instance_path: str) -> Path:
        return self.root / instance_path.lstrip("/")


@pytest.fixture
def inst(tmp_path: Path) -> Instance:
    return Instance(tmp_path)


# --------------------------------------------------------------------------- the AppSpec file


def test_parse_appspec_reads_files_permissions_hooks_and_defaults() -> None:
    spec = parse_appspec(
        "version: 0.0\nos: linux\n"
        "files:\n  - source: /\n    destination: /srv/app\n"
        "permissions:\n  - object: /srv/app\n    pattern: '*.sh'\n    except: [skip.sh]\n"
        "    mode: 755\n    type: [file]\n    owner: web\n"
        "hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 30\n      runas: web\n"
        "    - location: b.sh\n"
    )
    assert spec.file_exists_behavior == "DISALLOW"
    assert spec.files[0].source == "/" and spec.files[0].destination == "/srv/app"
    permission = spec.permissions[0]
    assert (permission.pattern, permission.except_, permission.types) == (
        "*.sh",
        ("skip.sh",),
        ("file",),
    )
    assert permission.mode == 0o755 and permission.owner == "web"
    first, second = spec.hooks["AfterInstall"]
    assert (first.location, first.timeout, first.runas) == ("a.sh", 30, "web")
    assert (second.timeout, second.runas) == (codedeploy.DEFAULT_SCRIPT_TIMEOUT_SECONDS, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: '0.0'\nos: linux\n", "invalid version"),
        ("version: 1.0\nos: linux\n", "invalid version"),
        ("version: 0.0\nos: windows\n", "os 'windows'"),
        ("version: 0.0\nos: linux\nfile_exists_behavior: MERGE\n", "file_exists_behavior"),
        ("version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - timeout: 5\n", "no location"),
        (
            "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n"
            "    - location: a\n      timeout: -1\n",
            "positive number",
        ),
        ("version: 0.0\nos: linux\npermissions:\n  - mode: 644\n", "no object"),
        ("version: 0.0\nos: linux\npermissions:\n  - object: /x\n    mode: 999\n", "octal"),
        # YAML reads an unquoted 0700 as 448, which the agent refuses too.
        ("version: 0.0\nos: linux\npermissions:\n  - object: /x\n    mode: 0700\n", "448"),
        ("version: 0.0\nos: linux\npermissions:\n  - object: /x\n    type: [socket]\n", "socket"),
        ("version: 0.0\nos: linux\nfiles:\n  - source: a\n    destination: rel/path\n", "absolute"),
        ("version: [0.0\n", "not valid YAML"),
    ],
)
def test_parse_appspec_refuses_what_the_agent_refuses(text: str, message: str) -> None:
    with pytest.raises(AppSpecError) as caught:
        parse_appspec(text)
    assert message in str(caught.value)


def test_names_that_cannot_be_directories_are_refused(tmp_path: Path) -> None:
    assert codedeploy.configuration_problem({"ApplicationName": "..", "DeploymentGroupName": "g"})
    assert codedeploy.configuration_problem({"ApplicationName": "a", "DeploymentGroupName": "x/y"})
    assert codedeploy.configuration_problem(
        {"ApplicationName": "a" * 101, "DeploymentGroupName": "g"}
    )
    assert not codedeploy.configuration_problem(
        {"ApplicationName": "#{V.app}", "DeploymentGroupName": "g"}
    )
    assert not codedeploy.configuration_problem(
        {"ApplicationName": "Web App", "DeploymentGroupName": "Prod"}
    )
    with pytest.raises(codedeploy.EngineError):
        codedeploy.instance_root(
            data_dir=tmp_path, application_name="..", deployment_group_name="g"
        )
    root = codedeploy.instance_root(
        data_dir=tmp_path, application_name="A", deployment_group_name="G"
    )
    assert root == tmp_path / "codedeploy" / "A" / "G"


def test_deployment_ids_look_like_codedeploys_and_group_ids_are_stable() -> None:
    first = codedeploy.deployment_id("one")
    assert re.fullmatch(r"d-[A-Z0-9]{9}", first)
    assert first == codedeploy.deployment_id("one") != codedeploy.deployment_id("two")
    group = codedeploy.deployment_group_id(application_name="A", deployment_group_name="G")
    assert group == codedeploy.deployment_group_id(application_name="A", deployment_group_name="G")
    assert group != codedeploy.deployment_group_id(application_name="A", deployment_group_name="H")


# --------------------------------------------------------------------------- hooks


def test_first_deployment_runs_the_hooks_in_codedeploys_order_without_application_stop(
    inst: Instance,
) -> None:
    bundle = make_bundle(inst.tmp / "b1", tag="v1")
    result = inst.deploy(bundle)
    assert result.succeeded, result.summary
    assert inst.events() == [
        ("BeforeInstall", "v1"),
        ("AfterInstall", "v1"),
        ("ApplicationStart", "v1"),
        ("ValidateService", "v1"),
    ]
    assert result.scripts_run == 4
    assert inst.file("/var/www/html/index.html").read_text() == "v1\n"
    log = inst.log.read_text()
    assert "ApplicationStop does not run on a first deployment" in log
    markers = re.findall(r"\[CodeDeploy\] LifecycleEvent - (\w+)", log)
    assert markers == [
        "ApplicationStop",
        "DownloadBundle",
        "BeforeInstall",
        "Install",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ]
    assert "output of v1 ValidateService" in log  # each script's output is in the log
    assert "[CodeDeploy] Script - scripts/BeforeInstall.sh" in log


def test_scripts_see_codedeploys_environment(inst: Instance) -> None:
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1"))
    line = inst.traced()[0]
    group_id = codedeploy.deployment_group_id(application_name=APP, deployment_group_name=GROUP)
    assert line == [
        "BeforeInstall",
        "v1",
        result.deployment_id,
        APP,
        GROUP,
        group_id,
        str(inst.root.absolute()),
    ]


def test_after_install_sees_the_installed_files_and_before_install_does_not(inst: Instance) -> None:
    probe = (
        'if test -f "$PIPEBOT_INSTANCE_ROOT/var/www/html/index.html"; then seen=present; '
        'else seen=absent; fi; echo "$LIFECYCLE_EVENT $seen" >> "$TRACE"'
    )
    scripts = {hook: f"#!/bin/sh\n{probe}\n" for hook in ("BeforeInstall", "AfterInstall")}
    inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", scripts=scripts))
    assert ("BeforeInstall", "absent") in inst.events()
    assert ("AfterInstall", "present") in inst.events()


def test_application_stop_runs_the_previous_revisions_scripts_never_the_new_ones(
    inst: Instance,
) -> None:
    assert inst.deploy(make_bundle(inst.tmp / "b1", tag="v1")).succeeded
    inst.reset_trace()
    second = inst.deploy(make_bundle(inst.tmp / "b2", tag="v2"))
    assert second.succeeded, second.summary
    assert inst.events()[0] == ("ApplicationStop", "v1")
    assert ("ApplicationStop", "v2") not in inst.events()
    # ApplicationStop sees the new deployment's ID, as the agent passes it.
    assert inst.traced()[0][2] == second.deployment_id
    inst.reset_trace()
    assert inst.deploy(make_bundle(inst.tmp / "b3", tag="v3")).succeeded
    assert inst.events()[0] == ("ApplicationStop", "v2")


def test_application_stop_comes_from_the_last_successful_revision_after_a_failure(
    inst: Instance,
) -> None:
    assert inst.deploy(make_bundle(inst.tmp / "b1", tag="v1")).succeeded
    failing = {"ValidateService": "#!/bin/sh\nexit 1\n"}
    assert not inst.deploy(make_bundle(inst.tmp / "b2", tag="v2", scripts=failing)).succeeded
    inst.reset_trace()
    assert inst.deploy(make_bundle(inst.tmp / "b3", tag="v3")).succeeded
    assert inst.events()[0] == ("ApplicationStop", "v1")


def test_a_failing_hook_fails_the_deployment_naming_hook_and_script(inst: Instance) -> None:
    scripts = {"AfterInstall": tracing_script("v1", 'echo "database is down" >&2; exit 3')}
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", scripts=scripts))
    assert not result.succeeded
    assert result.failed_hook == "AfterInstall"
    assert result.failed_script == "scripts/AfterInstall.sh"
    assert (
        result.summary
        == "AfterInstall failed: script scripts/AfterInstall.sh failed with exit code 3"
    )
    assert inst.events() == [("BeforeInstall", "v1"), ("AfterInstall", "v1")]  # nothing after
    assert "database is down" in inst.log.read_text()
    assert (
        codedeploy.deployed_revision(
            data_dir=inst.data, application_name=APP, deployment_group_name=GROUP
        )
        is None
    )


def test_a_hook_over_its_timeout_fails_and_its_process_is_killed(inst: Instance) -> None:
    spec = appspec(hooks={}) + (
        "hooks:\n  ApplicationStart:\n"
        "    - location: scripts/ApplicationStart.sh\n      timeout: 1\n"
    )
    started = inst.tmp / "started"
    scripts = {"ApplicationStart": f"#!/bin/sh\necho $$ > {shlex.quote(str(started))}\nsleep 30\n"}
    begin = time.monotonic()
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec, scripts=scripts))
    assert time.monotonic() - begin < 15
    assert not result.succeeded
    assert result.failed_hook == "ApplicationStart"
    assert result.summary == (
        "ApplicationStart failed: script scripts/ApplicationStart.sh did not finish within its "
        "timeout (1 second)"
    )
    pid = int(started.read_text())
    wait_for(lambda: not process_alive(pid), timeout=5, what="the timed-out script to be killed")


def test_scripts_run_by_location_relative_to_the_bundle_even_without_exec_bit_or_shebang(
    inst: Instance,
) -> None:
    spec = appspec(hooks={"BeforeInstall": ["deploy/hooks/plain.sh"]})
    bundle = make_bundle(inst.tmp / "b1", tag="v1", spec=spec)
    plain = bundle / "deploy" / "hooks" / "plain.sh"
    plain.parent.mkdir(parents=True)
    plain.write_text('echo "$LIFECYCLE_EVENT plain" >> "$TRACE"\n')  # no #!, mode 0644
    plain.chmod(0o644)
    result = inst.deploy(bundle)
    assert result.succeeded, result.summary
    assert inst.events() == [("BeforeInstall", "plain")]
    assert plain.stat().st_mode & 0o111 == 0  # the bundle itself is left untouched


def test_a_missing_script_fails_its_hook(inst: Instance) -> None:
    spec = appspec(hooks={"BeforeInstall": ["scripts/nope.sh"]})
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec))
    assert not result.succeeded
    assert result.summary.startswith("BeforeInstall failed: script scripts/nope.sh does not exist")


def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``deploy`` see a non-root pipebot, whoever runs the tests."""
    monkeypatch.setattr(codedeploy.os, "geteuid", lambda: 1000)


def test_runas_is_ignored_and_said_so_when_not_root(
    inst: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_root(monkeypatch)
    spec = (
        appspec(hooks={})
        + "hooks:\n  BeforeInstall:\n"
        + "    - location: scripts/BeforeInstall.sh\n      runas: nobody\n"
    )
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec))
    assert result.succeeded, result.summary
    assert "runas nobody ignored" in inst.log.read_text()


def test_hooks_that_need_a_load_balancer_are_not_run_and_said_so(inst: Instance) -> None:
    spec = appspec(hooks={"BeforeAllowTraffic": ["scripts/BeforeInstall.sh"]})
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec))
    assert result.succeeded
    assert inst.events() == []
    assert "Hook BeforeAllowTraffic is not run" in inst.log.read_text()


def test_a_missing_or_invalid_appspec_fails_download_bundle(inst: Instance) -> None:
    bundle = make_bundle(inst.tmp / "b1", tag="v1")
    (bundle / "appspec.yml").unlink()
    result = inst.deploy(bundle)
    assert not result.succeeded and result.failed_hook == "DownloadBundle"
    assert "no appspec.yml at its root" in result.summary
    bundle2 = make_bundle(inst.tmp / "b2", tag="v1", spec="version: 0.0\nos: windows\n")
    assert "os 'windows'" in inst.deploy(bundle2).summary


# --------------------------------------------------------------------------- Install


def test_each_deployment_first_removes_what_the_previous_one_installed(inst: Instance) -> None:
    first = make_bundle(inst.tmp / "b1", tag="v1", site={"a.txt": "a1", "old/b.txt": "b1"})
    assert inst.deploy(first).succeeded
    # A file the deployments did not install, in an installed directory, stays.
    foreign = inst.file("/var/www/html/old/notes.txt")
    foreign.write_text("mine")
    second = make_bundle(inst.tmp / "b2", tag="v2", site={"a.txt": "a2"})
    result = inst.deploy(second)
    assert result.succeeded, result.summary  # a.txt was removed first: no DISALLOW conflict
    assert inst.file("/var/www/html/a.txt").read_text() == "a2"
    assert not inst.file("/var/www/html/old/b.txt").exists()
    assert foreign.read_text() == "mine"


def test_file_exists_behavior_disallow_is_the_default_and_copies_nothing(inst: Instance) -> None:
    existing = inst.file("/var/www/html/b.txt")
    existing.parent.mkdir(parents=True)
    existing.write_text("someone else's")
    bundle = make_bundle(inst.tmp / "b1", tag="v1", site={"a.txt": "new a", "b.txt": "new b"})
    result = inst.deploy(bundle)
    assert not result.succeeded
    assert result.failed_hook == "Install"
    assert "a specified file already exists at this location: /var/www/html/b.txt" in result.summary
    assert existing.read_text() == "someone else's"
    assert not inst.file("/var/www/html/a.txt").exists()  # planned first, nothing copied
    assert ("AfterInstall", "v1") not in inst.events()


@pytest.mark.parametrize(
    ("behavior", "expected"), [("OVERWRITE", "new b"), ("RETAIN", "someone else's")]
)
def test_file_exists_behavior_overwrite_and_retain(
    inst: Instance, behavior: str, expected: str
) -> None:
    existing = inst.file("/var/www/html/b.txt")
    existing.parent.mkdir(parents=True)
    existing.write_text("someone else's")
    spec = appspec(extra=f"file_exists_behavior: {behavior}\n")
    bundle = make_bundle(
        inst.tmp / "b1", tag="v1", site={"a.txt": "new a", "b.txt": "new b"}, spec=spec
    )
    result = inst.deploy(bundle)
    assert result.succeeded, result.summary
    assert existing.read_text() == expected
    assert inst.file("/var/www/html/a.txt").read_text() == "new a"
    # The next deployment removes what this one installed, and a retained file is not its own.
    assert inst.deploy(
        make_bundle(inst.tmp / "b2", tag="v2", site={"c.txt": "c"}, spec=spec)
    ).succeeded
    assert not inst.file("/var/www/html/a.txt").exists()
    assert existing.exists() == (behavior == "RETAIN")


def test_a_single_file_source_lands_in_the_destination_directory(inst: Instance) -> None:
    spec = appspec(files="  - source: config/app.conf\n    destination: /etc/myapp\n", hooks={})
    bundle = make_bundle(inst.tmp / "b1", tag="v1", spec=spec)
    (bundle / "config").mkdir()
    (bundle / "config" / "app.conf").write_text("port=80\n")
    assert inst.deploy(bundle).succeeded
    assert inst.file("/etc/myapp/app.conf").read_text() == "port=80\n"


def test_permissions_modes_are_applied_by_object_pattern_except_and_type(inst: Instance) -> None:
    spec = appspec(
        hooks={},
        extra=(
            "permissions:\n"
            "  - object: /var/www/html\n    pattern: '*.sh'\n    except: [keep.sh]\n"
            "    mode: 750\n    type: [file]\n"
            "  - object: /var/www/html\n    pattern: 'data'\n    mode: '0700'\n"
            "    type: [directory]\n"
            "  - object: /var/www/html/secret.txt\n    mode: 600\n"
        ),
    )
    site = {"run.sh": "", "keep.sh": "", "index.html": "", "secret.txt": "", "data/x": ""}
    bundle = make_bundle(inst.tmp / "b1", tag="v1", site=site, spec=spec)
    for path in (bundle / "site").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    result = inst.deploy(bundle)
    assert result.succeeded, result.summary

    def mode(path: str) -> int:
        return inst.file(path).stat().st_mode & 0o7777

    assert mode("/var/www/html/run.sh") == 0o750
    assert mode("/var/www/html/keep.sh") == 0o644  # except
    assert mode("/var/www/html/index.html") == 0o644  # pattern
    assert mode("/var/www/html/secret.txt") == 0o600  # a file object
    assert mode("/var/www/html/data") == 0o700  # type directory


def test_permission_owner_is_ignored_and_said_so_when_not_root(
    inst: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_root(monkeypatch)
    spec = appspec(
        hooks={},
        extra="permissions:\n  - object: /var/www/html\n    owner: nobody\n    mode: 640\n",
    )
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec))
    assert result.succeeded, result.summary
    assert "owner/group of /var/www/html ignored" in inst.log.read_text()
    assert inst.file("/var/www/html/index.html").stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_permission_owner_and_group_are_applied_when_root(inst: Instance) -> None:
    nobody = pwd.getpwnam("nobody")
    spec = appspec(
        hooks={},
        extra="permissions:\n  - object: /var/www/html\n    owner: nobody\n    type: [file]\n",
    )
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec))
    assert result.succeeded, result.summary
    assert inst.file("/var/www/html/index.html").stat().st_uid == nobody.pw_uid
    assert "ignored" not in inst.log.read_text()


# --------------------------------------------------------------------------- the instance root


def _snapshot(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*")}


def test_destinations_climbing_with_dot_dot_stay_inside_the_root(inst: Instance) -> None:
    outside = inst.tmp / "outside"
    outside.mkdir()
    spec = appspec(files="  - source: site\n    destination: /../../../../outside/x\n", hooks={})
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec))
    assert result.succeeded, result.summary
    assert _snapshot(outside) == set()
    assert inst.file("/outside/x/index.html").read_text() == "v1\n"


def test_nothing_is_written_through_a_symlink_leading_out_of_the_root(inst: Instance) -> None:
    outside = inst.tmp / "outside"
    outside.mkdir()
    inst.root.mkdir(parents=True)
    os.symlink(outside, inst.root / "var")  # /var leads out of the root
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1"))
    assert not result.succeeded
    assert "outside the instance root" in result.summary
    assert _snapshot(outside) == set()
    # The destination directory itself a link out of the root: refused too.
    (inst.root / "var").unlink()
    (inst.root / "var" / "www").mkdir(parents=True)
    os.symlink(outside, inst.root / "var" / "www" / "html")
    assert not inst.deploy(make_bundle(inst.tmp / "b2", tag="v2")).succeeded
    assert _snapshot(outside) == set()


def test_the_agents_own_directory_is_not_written_through_a_link_either(inst: Instance) -> None:
    outside = inst.tmp / "outside"
    outside.mkdir()
    inst.root.mkdir(parents=True)
    os.symlink(outside, inst.root / "opt")  # where the agent keeps revisions and its lock
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1"))
    assert not result.succeeded
    assert "outside the instance root" in result.summary
    assert _snapshot(outside) == set()


def test_bundle_symlinks_are_installed_as_links_and_removed_as_links(inst: Instance) -> None:
    secret = inst.tmp / "secret.txt"
    secret.write_text("host secret")
    bundle = make_bundle(inst.tmp / "b1", tag="v1")
    os.symlink(secret, bundle / "site" / "link.txt")
    assert inst.deploy(bundle).succeeded
    link = inst.file("/var/www/html/link.txt")
    assert link.is_symlink() and os.readlink(link) == str(secret)
    assert inst.deploy(make_bundle(inst.tmp / "b2", tag="v2")).succeeded
    assert not link.is_symlink() and not link.exists()
    assert secret.read_text() == "host secret"  # the link went, never its target


def test_sources_cannot_climb_out_of_the_bundle(inst: Instance) -> None:
    (inst.tmp / "elsewhere").mkdir()
    (inst.tmp / "elsewhere" / "x.txt").write_text("not in the bundle")
    spec = appspec(files="  - source: ../elsewhere\n    destination: /srv\n", hooks={})
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1", spec=spec))
    assert not result.succeeded
    assert not inst.file("/srv/x.txt").exists()


def test_the_deployed_revision_is_recorded_per_group(inst: Instance) -> None:
    result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1"), revision="abc123")
    deployed = codedeploy.deployed_revision(
        data_dir=inst.data, application_name=APP, deployment_group_name=GROUP
    )
    assert deployed is not None
    assert (deployed.deployment_id, deployed.revision) == (result.deployment_id, "abc123")
    assert "Deployed revision abc123 to WebApp/Staging" in result.summary
    assert result.deployment_id in result.summary


def test_one_deployment_at_a_time_per_group(inst: Instance) -> None:
    group_id = codedeploy.deployment_group_id(application_name=APP, deployment_group_name=GROUP)
    lock = inst.root / "opt/codedeploy-agent/deployment-root" / f".{group_id}.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = inst.deploy(make_bundle(inst.tmp / "b1", tag="v1"))
    assert not result.succeeded
    assert "is in progress" in result.summary
    assert inst.events() == []


def test_bundle_digest_changes_with_content(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", tag="v1")
    first = codedeploy.bundle_digest(bundle)
    assert first == codedeploy.bundle_digest(bundle)
    (bundle / "site" / "index.html").write_text("v2\n")
    assert codedeploy.bundle_digest(bundle) != first
    assert first.startswith("sha256:")


# --------------------------------------------------------------------------- through the engine

NAME = "deploy-pipeline"
SCRIPT = """#!/bin/sh
root="$PIPEBOT_INSTANCE_ROOT"
version="$(cat "$root/var/www/html/version.txt" 2>/dev/null || echo none)"
echo "$LIFECYCLE_EVENT $version $DEPLOYMENT_ID" >> "$root/trace.log"
"""


def deploy_repo(repos: Path, *, version: str, validate_exit: int = 0) -> Path:
    files = {
        "version.txt": f"{version}\n",
        "appspec.yml": appspec(files="  - source: site\n    destination: /var/www/html\n"),
        **{f"scripts/{hook}.sh": SCRIPT for hook in ALL_HOOKS},
    }
    files["scripts/ValidateService.sh"] = SCRIPT + f"exit {validate_exit}\n"
    path = repos / "webapp"
    if path.exists():
        commit(path, files, f"version {version}")
    else:
        make_repo(path, files, f"version {version}")
    return path


def deploy_pipeline() -> dict[str, Any]:
    # The build makes the revision bundle: the appspec and its scripts from the repository,
    # and the site it generates.
    build = commands_action(
        "Build",
        [
            "mkdir -p site",
            "cp version.txt site/version.txt",
            'echo "<h1>$(cat version.txt)</h1>" > site/index.html',
        ],
        outputArtifacts=[{"name": "Bundle", "files": ["appspec.yml", "scripts/**/*", "site/**/*"]}],
    )
    deploy = {
        "name": "Deploy",
        "actionTypeId": {
            "category": "Deploy",
            "owner": "AWS",
            "provider": "CodeDeploy",
            "version": "1",
        },
        "configuration": {"ApplicationName": APP, "DeploymentGroupName": GROUP},
        "inputArtifacts": [{"name": "Bundle"}],
    }
    return pipeline(
        NAME,
        [
            ("Source", [source_action(repo="webapp")]),
            ("Build", [build]),
            ("Deploy", [deploy]),
        ],
    )


class Engine:
    def __init__(self, engine: Any, data: Path) -> None:
        self.engine = engine
        self.root = data / "codedeploy" / APP / GROUP

    def wait(self, execution_id: str, status: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            response = self.engine.get_pipeline_execution(
                pipelineName=NAME, pipelineExecutionId=execution_id
            )
            assert_output_shape("GetPipelineExecution", response)
            execution = response["pipelineExecution"]
            return execution if execution["status"] == status else None

        return wait_for(done, timeout=60, what=f"execution {execution_id} {status}")

    def deploy_action(self, execution_id: str) -> dict[str, Any]:
        response = self.engine.list_action_executions(
            pipelineName=NAME, filter={"pipelineExecutionId": execution_id}
        )
        assert_output_shape("ListActionExecutions", response)
        return next(a for a in response["actionExecutionDetails"] if a["actionName"] == "Deploy")

    def trace(self) -> list[list[str]]:
        path = self.root / "trace.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_a_commands_built_bundle_deploys_to_the_groups_instance_through_the_engine(
    engine: Any, repos_dir: Path, tmp_path: Path
) -> None:
    repo = deploy_repo(repos_dir, version="v1")
    e = Engine(engine, tmp_path / "data")
    response = engine.create_pipeline(pipeline=deploy_pipeline())
    assert_output_shape("CreatePipeline", response)
    first = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0]
    first_id = first["pipelineExecutionId"]
    e.wait(first_id, "Succeeded")

    action = e.deploy_action(first_id)
    deployment = action["output"]["executionResult"]["externalExecutionId"]
    assert re.fullmatch(r"d-[A-Z0-9]{9}", deployment)
    summary = action["output"]["executionResult"]["externalExecutionSummary"]
    assert f"to {APP}/{GROUP} (deployment {deployment})" in summary
    assert (e.root / "var/www/html/index.html").read_text() == "<h1>v1</h1>\n"
    assert [line[:2] for line in e.trace()] == [
        ["BeforeInstall", "none"],
        ["AfterInstall", "v1"],
        ["ApplicationStart", "v1"],
        ["ValidateService", "v1"],
    ]
    assert {line[2] for line in e.trace()} == {deployment}
    state = engine.get_pipeline_state(name=NAME)
    assert_output_shape("GetPipelineState", state)
    deployed = codedeploy.deployed_revision(
        data_dir=tmp_path / "data", application_name=APP, deployment_group_name=GROUP
    )
    assert deployed is not None and deployed.deployment_id == deployment
    assert deployed.pipeline_execution_id == first_id
    assert deployed.revision in summary

    # The second revision: ApplicationStop runs v1's script, seeing v1's files, which stay
    # until Install removes them (BeforeInstall still sees them, as on an EC2 instance).
    (e.root / "trace.log").unlink()
    deploy_repo(repo.parent, version="v2")
    started = engine.start_pipeline_execution(name=NAME)
    assert_output_shape("StartPipelineExecution", started)
    e.wait(started["pipelineExecutionId"], "Succeeded")
    assert [line[:2] for line in e.trace()] == [
        ["ApplicationStop", "v1"],
        ["BeforeInstall", "v1"],
        ["AfterInstall", "v2"],
        ["ApplicationStart", "v2"],
        ["ValidateService", "v2"],
    ]
    assert (e.root / "var/www/html/index.html").read_text() == "<h1>v2</h1>\n"


def test_a_failing_hook_fails_the_action_naming_hook_and_script_through_the_engine(
    engine: Any, repos_dir: Path, tmp_path: Path
) -> None:
    deploy_repo(repos_dir, version="v1", validate_exit=4)
    e = Engine(engine, tmp_path / "data")
    engine.create_pipeline(pipeline=deploy_pipeline())
    first_id = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0][
        "pipelineExecutionId"
    ]
    e.wait(first_id, "Failed")
    action = e.deploy_action(first_id)
    assert action["status"] == "Failed"
    summary = action["output"]["executionResult"]["externalExecutionSummary"]
    assert summary.startswith(
        "ValidateService failed: script scripts/ValidateService.sh failed with exit code 4"
    )
    assert re.fullmatch(
        r"d-[A-Z0-9]{9}", action["output"]["executionResult"]["externalExecutionId"]
    )
    state = engine.get_pipeline_state(name=NAME)
    assert_output_shape("GetPipelineState", state)
    deploy_state = next(s for s in state["stageStates"] if s["stageName"] == "Deploy")
    error = deploy_state["actionStates"][0]["latestExecution"]["errorDetails"]
    assert (
        "ValidateService" in error["message"] and "scripts/ValidateService.sh" in error["message"]
    )


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        ({"ApplicationName": "..", "DeploymentGroupName": "G"}, "ApplicationName '..'"),
        ({"ApplicationName": "A"}, "DeploymentGroupName"),
        ({"ApplicationName": "A", "DeploymentGroupName": "G", "Foo": "1"}, "'Foo'"),
    ],
)
def test_create_pipeline_refuses_bad_codedeploy_configuration(
    engine: Any, configuration: dict[str, str], message: str
) -> None:
    declaration = deploy_pipeline()
    declaration["stages"][2]["actions"][0]["configuration"] = configuration
    with pytest.raises(ClientError) as caught:
        engine.create_pipeline(pipeline=declaration)
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidActionDeclarationException", error
    assert message in error["Message"]


def test_stopping_with_abandon_kills_the_running_hook_script(
    engine: Any, repos_dir: Path, tmp_path: Path
) -> None:
    repo = deploy_repo(repos_dir, version="v1")
    pid_file = tmp_path / "hook.pid"
    commit(
        repo,
        {"scripts/ApplicationStart.sh": f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n"},
        "a slow start",
    )
    e = Engine(engine, tmp_path / "data")
    engine.create_pipeline(pipeline=deploy_pipeline())
    first_id = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0][
        "pipelineExecutionId"
    ]
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the hook to run")
    pid = int(pid_file.read_text())
    response = engine.stop_pipeline_execution(
        pipelineName=NAME, pipelineExecutionId=first_id, abandon=True, reason="enough"
    )
    assert_output_shape("StopPipelineExecution", response)
    e.wait(first_id, "Stopped")
    wait_for(lambda: not process_alive(pid), timeout=10, what="the hook script to be killed")
    assert e.deploy_action(first_id)["status"] == "Abandoned"
