"""CLI terminal output: progress lines, colour only on a terminal, table formatting; the
parser's assembly."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator import cli
from orchestrator.cli import COMMANDS, EXIT_USAGE, UsageError, build_parser, main, top
from orchestrator.cli.logs import parse_since
from orchestrator.cli.plumbing import ConsoleReporter, heal_printer
from orchestrator.cli.ps import format_table, format_uptime, pod_rows
from orchestrator.cli.top import format_bytes, format_usage
from orchestrator.engine.base import ContainerInfo, ContainerSpec
from orchestrator.engine.memory import MemoryEngine
from orchestrator.healing import HealReport
from orchestrator.planning import labels as L
from orchestrator.progress import ProgressEvent
from orchestrator.status import PodUsage
from orchestrator.ui import ProgressUI, describe, make_console, ok, status

EVENTS = [
    ProgressEvent("plan", "dep", 0, 2, message="2 replica steps"),
    ProgressEvent("starting", "dep", 0, 2, shard=0, replica=1, pod="dep-s0-r1-g2"),
    ProgressEvent("failed", "dep", 1, 2, shard=0, replica=1, pod="dep-s0-r1-g2",
                  message="exit code [1]"),
    ProgressEvent("done", "dep", 2, 2, message="rollout complete"),
]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_piped() -> None:
    out = io.StringIO()
    console = make_console(out)
    with ProgressUI(console, "rolling update of dep") as ui:
        for event in EVENTS:
            ui(event)
    ok(console, "dep: rolled out")
    assert out.getvalue().splitlines() == [
        "rolling update of dep ...",
        "  [0/2] plan: 2 replica steps",
        "  [0/2] starting dep-s0-r1-g2 (shard 0 replica 1)",
        "  [1/2] failed dep-s0-r1-g2 (shard 0 replica 1): exit code [1]",
        "  [2/2] done: rollout complete",
        "dep: rolled out",
    ]
    assert "\x1b[" not in out.getvalue()


def test_colour_and_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Tty()
    console = make_console(out)
    with ProgressUI(console, "scaling dep") as ui, status(console, "waiting"):
        for event in EVENTS:
            ui(event)
    ok(console, "done")
    text = out.getvalue()
    assert "\x1b[" in text and "exit code [1]" in text and "2/2" in text


def test_no_color_is_honoured_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    ok(make_console(out), "done")
    assert "\x1b[3" not in out.getvalue() and "done" in out.getvalue()


def test_describe_without_pod() -> None:
    assert describe(ProgressEvent("done", "d", 1, 1)) == "done"


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0, "0s"), (59.9, "59s"),
                                               (61, "1m01s"), (3725, "1h02m"),
                                               (90000, "1d01h")])
def test_format_uptime(seconds: float | None, text: str) -> None:
    assert format_uptime(seconds) == text


def test_pod_rows_and_table_for_stopped_pods() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pods = [
        ContainerInfo(id="2", name="d-s0-r0-g1", image="img", status="exited", exit_code=3,
                      restart_count=2,
                      labels={"orchestrator.deployment": "d", "orchestrator.role": "worker",
                              "orchestrator.shard": "0", "orchestrator.replica": "0",
                              "orchestrator.generation": "1"}),
        ContainerInfo(id="1", name="d-head", image="img", status="created",
                      started_at=now - timedelta(seconds=5), ports={50051: ("127.0.0.1", 9)},
                      labels={"orchestrator.deployment": "d", "orchestrator.role": "head"}),
    ]
    rows = pod_rows(pods, now=now)
    assert [(r["pod"], r["health"], r["uptime_seconds"], r["exit_code"]) for r in rows] == [
        ("d-head", "-", None, None), ("d-s0-r0-g1", "-", None, 3)]
    assert rows[0]["ports"] == ["127.0.0.1:9->50051/tcp"]
    table = format_table(rows, with_deployment=False).splitlines()
    assert table[0].split() == ["POD", "ROLE", "SHARD", "REPLICA", "STATE", "RESTARTS",
                                "REPLACED", "HEALTH", "ROUTING", "UPTIME", "PORTS", "IMAGE"]
    assert table[1].split()[5] == "0"
    assert table[2].split() == ["d-s0-r0-g1", "worker", "0", "0", "exited", "2", "0", "-",
                                "-", "-", "-", "img"]
    assert [r["restarts"] for r in rows] == [0, 2]
    assert rows[1]["routing"] is None  # no running head to ask


def test_since_takes_a_duration_or_a_time() -> None:
    now = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("1h30m", now) == now - timedelta(hours=1, minutes=30)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("1.5s", now) == now - timedelta(seconds=1.5)
    assert parse_since("2026-11-29T06:00:00+00:00", now) == now - timedelta(hours=1)
    assert parse_since("2026-11-29T06:00:00Z", now) == now - timedelta(hours=1)
    local = parse_since("2026-11-29T06:00:00", now)  # no zone: local time
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 11, 29, 6)
    for bad in ("", "soon", "10x", "m"):
        with pytest.raises(UsageError, match="--since"):
            parse_since(bad, now)


def test_help_loads_no_command_module_nor_docker_grpc_or_rich() -> None:
    """`orchestrator --help` lists every command without importing their modules."""
    code = ("import sys\nfrom orchestrator.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'grpc', "
            "'rich') or m.startswith(('orchestrator.cli.', 'orchestrator.deployment'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    listed = re.findall(r"^    (\w+)(?: |$)", proc.stdout, flags=re.MULTILINE)
    assert listed == [c.name for c in COMMANDS]
    assert proc.stdout.strip().splitlines()[-1] == "['orchestrator.cli.base']"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_gets_its_arguments_and_a_handler() -> None:
    commands = _subparsers(build_parser())
    assert list(commands) == [c.name for c in COMMANDS]
    for name, sub in commands.items():
        leaves = _subparsers(sub).values() if name == "images" else [sub]
        for leaf in leaves:
            assert callable(leaf.get_default("handler")), name


def test_running_one_command_fills_in_only_that_one() -> None:
    commands = _subparsers(build_parser(only={"ps"}))
    assert commands["ps"].get_default("handler") is not None
    assert commands["up"].get_default("handler") is None


def test_moved_names_still_import_from_orchestrator_cli() -> None:
    from orchestrator.apply import spec_changes
    from orchestrator.cli.ps import pod_rows as moved

    assert cli.spec_changes is spec_changes and cli.pod_rows is moved
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = cli.no_such_name


@pytest.mark.parametrize(("count", "text"), [(0, "0B"), (1023, "1023B"), (1536, "1.5KiB"),
                                             (64 * 1024**2, "64.0MiB"),
                                             (3 * 1024**3, "3.0GiB"), (5 * 1024**4, "5120.0GiB")])
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_top_table() -> None:
    rows = [PodUsage("d", "d-head", "head", None, None, "running", 0.5, 20 * 1024**2,
                     1024**3, 0, None),
            PodUsage("d", "d-s0-r0-g1", "worker", 0, 0, "running", 101.25, 512 * 1024**2,
                     1024**3, 2, 3)]
    table = format_usage(rows, with_deployment=True).splitlines()
    assert table[0].split("  ")[0:2] == ["DEPLOYMENT", "POD"]
    assert "MEM USAGE / LIMIT" in table[0] and "IN-FLIGHT" in table[0]
    assert table[2].split() == ["d", "d-s0-r0-g1", "worker", "running", "101.25%", "512.0MiB",
                                "/", "1.0GiB", "50.00%", "2", "3"]
    assert table[1].split()[-1] == "-"  # the head: no in-flight count of its own


@pytest.mark.parametrize("argv", [["down"], ["down", "x", "--all"], ["down", "x", "-f", "a.yml"],
                                  ["down", "--all", "-f", "a.yml"], ["top", "--interval", "-1"]])
def test_usage_errors_before_any_engine_call(argv: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orchestrator: error: ")


def test_quiet_is_on_every_command() -> None:
    commands = _subparsers(build_parser())
    for name, sub in commands.items():
        leaves = _subparsers(sub).values() if name == "images" else [sub]
        for leaf in leaves:
            quiet = leaf._option_string_actions.get("-q")
            assert quiet is not None and quiet.dest == "quiet", name
            assert leaf._option_string_actions["--quiet"] is quiet


def test_library_progress_as_console_lines() -> None:
    """What `up`, `down` and the heal loop print, piped: one plain line per step or report."""
    out = io.StringIO()
    console = make_console(out)
    reporter = ConsoleReporter(console)
    with reporter.step("start", "dep", "starting dep (3 pods)"):
        pass
    with reporter.step("rollout", "dep", "rolling update of dep") as progress:
        progress(EVENTS[-1])
    reporter.event(ProgressEvent("stopped", "dep", 0, 0, pod="dep-s0-r1-g1",
                                 message="removed: left behind"))
    reporter.event(ProgressEvent("healthy", "dep", 0, 0, pod="dep-s0-r1-g2"))  # not shown
    show = heal_printer(console)
    for report in (HealReport("dep", "replaced", ("dep-s0-r0-g1", "dep-s0-r1-g1")),
                   HealReport("dep", "failed", message="head down"),
                   HealReport("dep", "changed", ("dep-s0-r2-g1",), "re-registered"),
                   HealReport("dep", "removed")):
        show(report)
    assert out.getvalue().splitlines() == [
        "starting dep (3 pods) ...",
        "rolling update of dep ...",
        "  [2/2] done: rollout complete",
        "dep: dep-s0-r1-g1 removed: left behind",
        "dep: replaced unhealthy dep-s0-r0-g1, dep-s0-r1-g1",
        "dep: could not heal: head down",
        "dep: dep-s0-r2-g1 re-registered",
        "dep: removed by another process",
    ]


def test_top_redraws_until_ctrl_c(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Piped, `top` prints one table per sample; Ctrl-C (during the pause) ends it quietly."""
    engine = MemoryEngine()
    engine.add_image("img")
    engine.run_container(ContainerSpec(name="d-s0-r0-g1", image="img", labels={
        **L.for_deployment("d"), L.ROLE: "worker", L.SHARD: "0", L.REPLICA: "0"}))
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        engine.set_usage("d-s0-r0-g1", cpu_percent=12.5, memory_bytes=2048)
        if len(pauses) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(top.time, "sleep", pause)
    top._live(engine, "d", 0.5)
    tables = [t for t in capsys.readouterr().out.split("\n\n") if t.strip()]
    assert pauses == [0.5, 0.5] and len(tables) == 2
    assert [t.splitlines()[1].split()[:4] for t in tables] == [
        ["d-s0-r0-g1", "worker", "running", "0.00%"], ["d-s0-r0-g1", "worker", "running",
                                                      "12.50%"]]
