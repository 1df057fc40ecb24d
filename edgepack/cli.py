"""`edgepack`: list targets and build bundles."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import click
from rich.table import Table

from edgepack_runtime.cli import THREAD_COUNTS, ErrorLineGroup, fail
from edgepack_runtime.manifest import TaskMetric
from edgepack_runtime.report import artifacts_table, make_console, plain
from edgepack_runtime.verdict import Verdict, figure_text

from .errors import BuildFailed, UsageError
from .request import OPTIONS, BuildRequest
from .targets import HOST_ID, load_target, target_ids

console = make_console()
err_console = make_console(stderr=True)


class _Group(ErrorLineGroup):
    def invoke(self, ctx):
        from .bundle_writer import is_disk_full

        try:
            return super().invoke(ctx)
        except OSError as exc:  # a full disk in a stage outside the bundle's staging: one line too
            if not is_disk_full(exc):
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            fail(f"the disk is full{where} ({exc.strerror}); nothing at -o was changed: free some space and run "
                 "it again")

    def verbose(self) -> bool:
        return _log_lines.verbose

    def report(self, exc) -> None:
        if isinstance(exc, BuildFailed):  # show what was built before saying why it failed
            for result in exc.results:
                console.print(artifacts_table(result.manifest))


class _LogLines(logging.Handler):
    """edgepack's log records on stderr: warnings always (unless -q), stages with -v; a
    running build's status line shows the current stage either way."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose, self.quiet, self.status, self.started = verbose, False, None, 0.0

    def emit(self, record: logging.LogRecord) -> None:
        message = plain(record.getMessage())
        if record.levelno >= logging.WARNING:
            err_console.print(f"[bold yellow]{record.levelname}:[/] {message}", highlight=False)
        elif self.verbose and not getattr(record, "status_line_only", False):  # search.STATUS_LINE_ONLY
            err_console.print(f"[dim]{message}[/]", highlight=False)
        if self.status is not None and record.levelno == logging.INFO:
            minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
            self.status.update(text=f"building ({minutes}:{seconds:02d}): {message}…")


_log_lines = _LogLines(verbose=False)


@contextmanager
def _status_line(text: str):
    """A spinner and `text` on stderr while the block runs; yields the Spinner to update.
    rich's console.status() would also point sys.stdout and sys.stderr at the terminal, and
    carry the converters' Python-level warnings (torch's `W1207 … _pytree.py`) past
    native_output_hidden: this Live leaves them alone."""
    from rich.live import Live
    from rich.spinner import Spinner

    spinner = Spinner("dots", text=text, style="status.spinner")
    with Live(spinner, console=err_console, refresh_per_second=12.5, transient=True, redirect_stdout=False,
              redirect_stderr=False):
        yield spinner


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgepack")
@click.option("-v", "--verbose", count=True, help="-v: each build stage; -vv: also the converters' own output.")
@click.option("-q", "--quiet", is_flag=True, help="Errors only, no warnings.")
def main(verbose: int, quiet: bool):
    """Quantize, export and validate PyTorch models for edge devices."""
    logger = logging.getLogger("edgepack")
    logger.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose >= 2 else logging.INFO)
    logger.propagate = False  # the handler below prints them once, the CLI's way
    _log_lines.verbose, _log_lines.quiet = verbose >= 1, quiet
    if _log_lines not in logger.handlers:
        logger.addHandler(_log_lines)


@main.group(cls=_Group, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print every resolved profile as JSON.")
@click.pass_context
def targets(ctx, as_json: bool):
    """List the known device profiles."""
    if ctx.invoked_subcommand:
        return
    if as_json:
        click.echo(json.dumps([load_target(t).to_dict() for t in target_ids()], indent=2))
        return
    table = Table(title="edgepack targets")
    for column in ("id", "arch", "threads", "formats and precisions", "description"):
        table.add_column(column, no_wrap=column != "description")
    for target_id in target_ids():
        p = load_target(target_id)
        offered = "; ".join(f"{f}: {','.join(p.settings(f).precisions)}" for f in p.formats)
        table.add_row(*(plain(cell) for cell in (p.id, p.arch, p.threads, offered, p.description)))
    console.print(table)


def _print_toml(table: dict, prefix: str = "") -> None:
    for key, value in table.items():
        if not isinstance(value, dict):
            console.print(plain(f"{key} = {json.dumps(value)}"), highlight=False)
    for key, value in table.items():
        if isinstance(value, dict):
            console.print(plain(f"\n[{prefix}{key}]"), highlight=False)
            _print_toml(value, f"{prefix}{key}.")


@targets.command("show")
@click.argument("target_id")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON instead of TOML.")
def targets_show(target_id: str, as_json: bool):
    """Print one profile, resolved (extends applied; `host` detected)."""
    profile = load_target(target_id).to_dict()
    if as_json:
        click.echo(json.dumps(profile, indent=2))
    else:
        _print_toml(profile)


def _build_options(command):
    """`edgepack build`'s options, made from the build request's fields (request.OPTIONS):
    click's default is the field's, and its name the edgepack.build() keyword."""
    for o in reversed(OPTIONS.values()):  # decorators apply bottom-up: --help lists them in order
        command = click.option(*o.flag.names, o.keyword, default=o.default, show_default=o.shown_default,
                               help=o.flag.help, **o.flag.settings)(command)
    return command


@main.command("build")
@click.argument("model", metavar="FILE.py:FACTORY|best.pt")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--target", "targets", multiple=True, default=(HOST_ID,), show_default=True,
              help="Target id (see `edgepack targets`); repeat it for one bundle per target in -o's folder.")
@_build_options
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's path and manifest as JSON, no table.")
def build_cmd(model, output, targets, as_json, **options):
    """Export, quantize and validate MODEL for a target; write a bundle to -o."""
    targets = tuple(dict.fromkeys(targets))  # a target named twice is built once
    request = BuildRequest.of(model, output, targets[0],
                              **{k: OPTIONS[k].from_command_line(v) for k, v in options.items()})
    from .formats.output import native_output_hidden

    # The status line is on stderr (on a terminal only: rich draws nothing elsewhere), never
    # with -q or --json, whose callers asked for errors or a document alone.
    status_line = nullcontext() if as_json or _log_lines.quiet else \
        _status_line(f"building {plain(model)} for {plain(', '.join(targets))}…")
    with status_line as status, native_output_hidden(console, err_console):
        _log_lines.status, _log_lines.started = status, time.monotonic()
        try:
            from .pipeline import build_from, build_targets  # torch and the converters: only to build

            results = build_targets(request, targets) if len(targets) > 1 else [build_from(request)]
        finally:
            _log_lines.status = None
    if as_json:
        shown = [{"path": str(r.path), "manifest": json.loads(r.manifest.to_json())} for r in results]
        click.echo(json.dumps(shown[0] if len(targets) == 1 else shown, indent=2))
        return
    for result in results:
        console.print(artifacts_table(result.manifest))
        if result.manifest.emulated:
            console.print(_emulated_table(result.manifest.emulated))
        seconds = result.manifest.build["seconds"]
        console.print(f"wrote {plain(result.path)} in {seconds['total']:.1f} s "
                      f"({', '.join(f'{k} {v:.1f}s' for k, v in seconds.items() if k != 'total')})")
    if len(results) > 1:
        console.print(_targets_table(results))


def _targets_table(results) -> Table:
    """The targets side by side: each artifact's headline figure, or why it was left out."""
    from edgepack_runtime.task_fidelity import headline

    names = list(dict.fromkeys(a.name for r in results for a in r.manifest.artifacts))
    table = Table(title="targets side by side")
    table.add_column("artifact", no_wrap=True)
    for r in results:
        table.add_column(plain(r.manifest.target.get("id")), no_wrap=True)
    for name in names:
        cells = []
        for r in results:
            art = next((a for a in r.manifest.artifacts if a.name == name), None)
            figure = headline(art.accuracy.metrics) if art and art.accuracy and art.accuracy.metrics else None
            if art is None:
                cells.append("-")
            elif art.status != "ok":
                cells.append("[red]left out[/]" if art.status == "rejected" else "[red]build failed[/]")
            else:
                cells.append(plain(figure.describe(interval=False)) if figure else "ok")
        table.add_row(plain(name), *cells)
    return table


@main.command("sign")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", required=True, type=click.Path(path_type=Path), metavar="KEY.pem",
              help="Elliptic-curve private key (PEM; P-256/384/521).")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the key's password.")
def sign_cmd(bundle, key, password_env):
    """Sign BUNDLE (bundle.sig, the OpenSSF model-signing format): devices with the public
    key in their trust policy refuse it if anything in it changes (docs/fleet.md)."""
    import os

    from edgepack_runtime.bundle import open_bundle
    from edgepack_runtime.signature import sign_bundle

    opened = open_bundle(bundle)
    opened.verify_integrity()  # sign only what still matches its manifest
    password = os.environ.get(password_env) if password_env else None
    path = sign_bundle(opened.root, key, password)
    console.print(f"signed {plain(opened.manifest.name)}: {plain(path)}", highlight=False)


def _compare_table(rows, title: str) -> Table:
    from .compare import COLUMNS, table_cells

    table = Table(title=plain(title))
    for column in COLUMNS:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*(plain(cell) for cell in table_cells(row)))
    return table


@main.command("compare")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="Result JSON to compute speed-ups against.")
@click.option("--fail-if-slower", type=click.FloatRange(min=0), metavar="PCT",
              help="Exit 1 if any p50 is more than PCT % slower than --baseline.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write a PNG bar chart (p50, p90 whiskers).")
@click.option("--html", "html_out", type=click.Path(path_type=Path), help="Write a self-contained HTML report.")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), help="Write the rows as CSV.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the rows as JSON.")
def compare_cmd(results, baseline, fail_if_slower, plot, html_out, csv_out, json_out):
    """Compare `edgepack-runtime bench -o` results across devices, with accuracy."""
    from . import compare

    if fail_if_slower is not None and baseline is None:
        raise UsageError("--fail-if-slower needs --baseline: the result to compare against")
    rows = compare.compare_rows(results, baseline)
    console.print(_compare_table(rows, "edgepack compare" + (f" (baseline {baseline})" if baseline else "")))
    for writer, path in ((compare.write_plot, plot), (compare.write_csv, csv_out), (compare.write_json, json_out)):
        if path:
            writer(rows, path)
            console.print(f"wrote {plain(path)}", highlight=False)
    if html_out:
        compare.write_html(rows, html_out, "edgepack compare")
        console.print(f"wrote {plain(html_out)}", highlight=False)
    if fail_if_slower is not None:
        slower = compare.regressions(rows, fail_if_slower)
        if slower:
            fail(f"{len(slower)} result(s) more than {fail_if_slower:g}% slower than the baseline: "
                 + "; ".join(slower))


def _progress(message: str) -> None:
    err_console.print(plain(message), highlight=False)


@dataclass
class _Fleet:
    """The devices a command runs on: an Ansible inventory and the hosts picked from it."""

    inventory: Path
    hosts: list
    generated: bool = False  # written from --host / --devices

    def run(self, step: str, names: list, variables: dict, forks):
        """Run an edgepack playbook step on `names` (see fleet.run_step)."""
        from .fleet import run_step

        everyone = self.generated and len(names) == len(self.hosts)
        return run_step(step, self.inventory, names, variables, forks, everyone=everyone)


@contextmanager
def _fleet(hosts, identity, devices_file, inventory, limit, remote_root):
    """--inventory [--limit], or --host / --devices written out as an inventory: one way in."""
    import dataclasses
    import tempfile

    from .devices import load_inventory, parse_host
    from .fleet import Host, resolve_hosts, write_inventory

    given = [bool(hosts), devices_file is not None, inventory is not None]
    if sum(given) != 1:
        raise UsageError("name the devices with --inventory INVENTORY (Ansible), --host user@host[:port] "
                         "(repeatable) or --devices devices.toml: one of them")
    if inventory is not None:
        yield _Fleet(inventory, resolve_hosts(inventory, limit))
        return
    devices = load_inventory(devices_file) if devices_file else [
        dataclasses.replace(parse_host(h, identity), root=remote_root) for h in hosts]
    with tempfile.TemporaryDirectory(prefix="edgepack-inventory-") as tmp:
        picked = {h.name for h in resolve_hosts(write_inventory(devices, Path(tmp) / "all.yml"), limit)}
        devices = [d for d in devices if d.name in picked]  # --limit applied: the inventory holds only these
        path = write_inventory(devices, Path(tmp) / "inventory.yml")
        yield _Fleet(path, [Host(d.name, d.target) for d in devices], generated=True)


_fleet_options = [
    click.option("--inventory", type=click.Path(path_type=Path), help="An Ansible inventory (file or directory)."),
    click.option("--limit", metavar="PATTERN", help="Ansible host pattern within the inventory (group, host, glob)."),
    click.option("--forks", type=click.IntRange(min=1), help="Hosts at once (default: all, at most 50)."),
    click.option("--host", "hosts", multiple=True, metavar="USER@HOST[:PORT]", help="A device over SSH (repeatable)."),
    click.option("--identity", type=click.Path(), help="SSH private key for --host devices."),
    click.option("--devices", "devices_file", type=click.Path(path_type=Path), help="A devices.toml inventory."),
    click.option("--remote-root", default="~/.edgepack", show_default=True,
                 help="Where --host devices keep the venv, store and results (inventories: edgepack_root)."),
]


def _with_fleet(fn):
    for option in reversed(_fleet_options):
        fn = option(fn)
    return fn


def _outcome_table(title: str, rows: list, columns: tuple) -> Table:
    table = Table(title=plain(title))
    for column in columns:
        table.add_column(column, no_wrap=column not in ("detail",))
    for row in rows:
        table.add_row(*(plain(cell) for cell in row))
    return table


def _fail_hosts(what: str, outcomes: dict, total: int) -> None:
    bad = [o for o in outcomes.values() if o.status in ("failed", "unreachable")]
    if bad:
        names = ", ".join(f"{o.host}: {o.status}" for o in bad)
        fail(f"{what} failed on {len(bad)} of {total} host(s) ({names}); the others are done")


def _deploy_vars(bundle_path: Path, tmp: Path, fleet: _Fleet, forks, offline: bool, require_signature: bool,
                 trusted_keys) -> tuple[dict, list, dict]:
    """Extra vars for deploy/bench, the hosts to run on, and the hosts skipped (target mismatch)."""
    import tarfile

    from edgepack_runtime.bundle import open_bundle

    from .runtime_wheels import build_runtime_wheel, download_wheels, runtime_extras

    bundle = open_bundle(bundle_path)
    bundle.verify_integrity()  # never ship a damaged bundle
    target = bundle.manifest.target.get("id")
    skipped = {h.name: f"edgepack_target is {h.target}, the bundle is built for {target}"
               for h in fleet.hosts if h.target and h.target != target}
    run_on = [h.name for h in fleet.hosts if h.name not in skipped]
    wheel = build_runtime_wheel(tmp)
    extras = runtime_extras(bundle, signing=require_signature or bool(trusted_keys))
    archive = tmp / "bundle.tar"  # one transfer per device instead of round trips per file
    with tarfile.open(archive, "w") as tar:
        for path in sorted(bundle.root.iterdir()):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=path.name)
    variables = {"edgepack_wheel": str(wheel), "edgepack_extras": extras, "edgepack_bundle": str(bundle.root),
                 "edgepack_bundle_archive": str(archive), "edgepack_bundle_name": bundle.manifest.name,
                 "edgepack_bundle_version": bundle.sha256[:12]}
    if require_signature:  # extra vars win over the inventory: set only what the command line says
        variables["edgepack_require_signature"] = True
    if trusted_keys:
        variables["edgepack_trusted_keys"] = [str(Path(k).resolve()) for k in trusted_keys]
    if offline and run_on:
        facts = fleet.run("facts", run_on, {}, forks)
        wheels = {}
        for name, outcome in facts.items():
            if outcome.status != "ok":
                continue
            machine, version = outcome.steps["facts"].split()
            folder = tmp / f"wheels-{machine}-{version}"
            if not folder.exists():
                _progress(f"downloading wheels for {machine} / cp{version}")
                download_wheels(wheel, extras, machine, version, folder)
            wheels[name] = str(folder)
        variables["edgepack_offline_wheels"] = wheels
    return variables, run_on, skipped


@main.command("deploy")
@click.argument("bundle", type=click.Path(path_type=Path))
@_with_fleet
@click.option("--offline", is_flag=True, help="Ship every wheel the devices need: they need no network.")
@click.option("--require-signature", is_flag=True, help="Devices refuse the bundle unless signed by a trusted key.")
@click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(path_type=Path), metavar="KEY.pub",
              help="Install this public key in the devices' trust policy (repeatable).")
def deploy_cmd(bundle, inventory, limit, forks, hosts, identity, devices_file, remote_root, offline, require_signature,
               trusted_keys):
    """Deploy BUNDLE to every device in parallel: install the runtime, stage the bundle,
    verify it there, and only then make it current (docs/fleet.md)."""
    import tempfile

    from .fleet import HostOutcome

    with _fleet(hosts, identity, devices_file, inventory, limit, remote_root) as fleet, \
            tempfile.TemporaryDirectory(prefix="edgepack-deploy-") as tmp:
        variables, run_on, skipped = _deploy_vars(bundle, Path(tmp), fleet, forks, offline, require_signature,
                                                  trusted_keys)
        outcomes = fleet.run("deploy", run_on, variables, forks) if run_on else {}
    outcomes.update({name: HostOutcome(name, "skipped", reason) for name, reason in skipped.items()})
    rows = []
    for host in fleet.hosts:
        o = outcomes[host.name]
        done = o.step_json("install") or {}
        verified = "passed" if done.get("verified") else "-" if o.status == "skipped" else "FAILED"
        rows.append((host.name, host.target or "-", done.get("version") or variables["edgepack_bundle_version"],
                     verified if o.status != "unreachable" else "unreachable",
                     f"{o.seconds:.1f}" if o.seconds is not None else "-",
                     o.error or ("current" if done.get("active") else "")))
    console.print(_outcome_table(f"deploy {variables['edgepack_bundle_name']}", rows,
                                 ("host", "target", "version", "verification", "seconds", "detail")))
    _fail_hosts("deployment", outcomes, len(fleet.hosts))


@main.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@_with_fleet
@click.option("--offline", is_flag=True, help="Ship every wheel the devices need: they need no network.")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Directory for one result JSON per device.")
@click.option("--artifact", default=None, help="Passed to edgepack-runtime bench (name, all or auto).")
@click.option("--threads", type=THREAD_COUNTS, default=None, help="Thread counts (default: the target's).")
@click.option("--runs", type=click.IntRange(min=2), default=None)
@click.option("--min-seconds", type=click.FloatRange(min=0), default=None)
def bench_cmd(bundle, inventory, limit, forks, hosts, identity, devices_file, remote_root, offline, out_dir, artifact,
              threads, runs, min_seconds):
    """Deploy where needed and benchmark BUNDLE on every device in parallel; compare them."""
    import tempfile

    from . import compare

    passthrough = []
    threads = ",".join(map(str, threads)) if threads else None
    for flag, value in (("--artifact", artifact), ("--threads", threads), ("--runs", runs),
                        ("--min-seconds", min_seconds)):
        if value is not None:
            passthrough += [flag, str(value)]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with _fleet(hosts, identity, devices_file, inventory, limit, remote_root) as fleet, \
            tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        variables, run_on, skipped = _deploy_vars(bundle, Path(tmp), fleet, forks, offline, False, ())
        variables.update(edgepack_bench_args=passthrough, edgepack_results_dir=str(out_dir))
        outcomes = fleet.run("bench", run_on, variables, forks) if run_on else {}
    for name, reason in skipped.items():
        err_console.print(f"[yellow]{plain(name)}: skipped, {plain(reason)}[/]", highlight=False)
    results = []
    for name, o in outcomes.items():
        if o.status == "ok":
            results.append(out_dir / f"{name}.json")
            console.print(plain(f"{name}: {results[-1]}"), highlight=False)
        else:
            err_console.print(f"[red]{plain(name)}: {plain(o.status)}: {plain(o.error or '')}[/]", highlight=False)
    if results:
        console.print(_compare_table(compare.compare_rows(results),
                                     f"edgepack bench {bundle} on {len(results)} device(s)"))
    _fail_hosts("benchmarking", outcomes, len(fleet.hosts))


@main.command("rollback")
@click.argument("name")
@_with_fleet
def rollback_cmd(name, inventory, limit, forks, hosts, identity, devices_file, remote_root):
    """On every device, make the version of bundle NAME that was current before this one current again."""
    with _fleet(hosts, identity, devices_file, inventory, limit, remote_root) as fleet:
        outcomes = fleet.run("rollback", [h.name for h in fleet.hosts], {"edgepack_bundle_name": name}, forks)
    rows = [(o.host, o.status, o.steps.get("rollback", "").strip() or o.error or "") for o in outcomes.values()]
    console.print(_outcome_table(f"rollback {name}", rows, ("host", "result", "detail")))
    _fail_hosts("rollback", outcomes, len(fleet.hosts))


@main.command("status")
@_with_fleet
@click.option("--json", "as_json", is_flag=True, help="Print every device's store as JSON.")
def status_cmd(inventory, limit, forks, hosts, identity, devices_file, remote_root, as_json):
    """What each device serves: every bundle's current version and since when."""
    with _fleet(hosts, identity, devices_file, inventory, limit, remote_root) as fleet:
        outcomes = fleet.run("status", [h.name for h in fleet.hosts], {}, forks)
    stores = {name: (o.step_json("status") or {}).get("bundles", []) for name, o in outcomes.items()}
    if as_json:
        click.echo(json.dumps({name: {"status": o.status, "error": o.error, "bundles": stores[name]}
                               for name, o in outcomes.items()}, indent=2))
    else:
        rows = [(name, b["name"], b["active"] or "-", b["since"] or "-", len(b["versions"]))
                for name in outcomes for b in stores[name]]
        rows += [(o.host, "-", o.status, "-", o.error or "") for o in outcomes.values() if o.status != "ok"]
        console.print(_outcome_table("fleet status", rows, ("host", "bundle", "current", "since", "versions stored")))
    _fail_hosts("status", outcomes, len(fleet.hosts))


@main.command("telemetry")
@_with_fleet
@click.option("--since", default=None, metavar="1h", help="Only the last 30s / 15m / 1h / 7d.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--textfile-dir", type=click.Path(), default=None,
              help="Also install the Prometheus textfile export into this node_exporter directory on each device.")
def telemetry_cmd(inventory, limit, forks, hosts, identity, devices_file, remote_root, since, fmt, textfile_dir):
    """Collect every device's telemetry summary: latency percentiles, error rate, drift."""
    import csv
    import io


    with _fleet(hosts, identity, devices_file, inventory, limit, remote_root) as fleet:
        names = [h.name for h in fleet.hosts]
        outcomes = fleet.run("telemetry", names, {"edgepack_since": since or ""}, forks)
        if textfile_dir:
            exported = fleet.run("textfile", names, {"edgepack_textfile_dir": textfile_dir}, forks)
            for o in exported.values():
                if o.status != "ok":
                    outcomes[o.host] = o
    rows = []
    for name, o in outcomes.items():
        summary = o.step_json("telemetry")
        for a in (summary or {}).get("artifacts", []):
            lat = a["latency_ms"]
            drift = [d for d in summary.get("drift", []) if d["bundle"] == a["bundle"]]
            rows.append({"host": name, "bundle": a["bundle"], "artifact": a["artifact"], "count": a["count"],
                         "error_rate": a["error_rate"],
                         "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"],
                         "drift_psi": max((d["psi"] for d in drift), default=None),
                         "drifted": any(d["drifted"] for d in drift)})
    if fmt == "json":
        click.echo(json.dumps({"rows": rows, "hosts": {n: {"status": o.status, "error": o.error}
                                                        for n, o in outcomes.items()}}, indent=2))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["host"])
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        def ms(v):
            return "-" if v is None else f"{v:.3f}"

        console.print(_outcome_table("fleet telemetry" + (f" (last {since})" if since else ""), [
            (r["host"], r["bundle"], r["artifact"], r["count"], f"{r['error_rate']:.2%}", ms(r["p50_ms"]),
             ms(r["p90_ms"]), ms(r["p99_ms"]), "DRIFT" if r["drifted"] else "ok") for r in rows],
            ("host", "bundle", "artifact", "count", "error rate", "p50 ms", "p90 ms", "p99 ms", "drift")))
        for o in outcomes.values():
            if o.status == "ok" and o.step_json("telemetry") is None:
                console.print(f"{plain(o.host)}: no telemetry recorded yet", highlight=False)
    _fail_hosts("collecting telemetry", outcomes, len(fleet.hosts))


def _emulated_table(report: dict) -> Table:
    table = Table(title=plain(f"emulated {report['arch']} ({report['cpu']}, {report['qemu']}): "
                              f"{report['seconds']:.0f} s, timings meaningless under emulation"))
    for column in ("artifact", "self-test", "max |diff| vs PyTorch", "tolerance", "max |diff| vs this host",
                   "accuracy vs PyTorch there", "backend"):
        table.add_column(column, no_wrap=True)
    for r in map(Verdict.from_dict, report["results"]):
        if r.error:
            table.add_row(plain(r.artifact), "[red]FAILED[/]", plain(r.error), "-", "-", "-", "-")
            continue
        verdict = "[green]passed[/]" if r.passed else "[red]FAILED[/]"
        acc = r.accuracy
        accuracy = "-" if not acc else plain(", ".join(TaskMetric(**m).describe() for m in acc.get("metrics", ()))
                                              or f"cos {acc['cosine']:.4f} ({acc['samples']} samples)")
        table.add_row(plain(r.artifact), verdict, figure_text(r.max_abs_diff, ".3e"),
                      figure_text(r.tolerance, ".1e"), figure_text(r.diff_vs_host, ".3e"), accuracy, plain(r.backend))
    return table


@main.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--emulate", type=click.Choice(["aarch64", "x86_64"]), help="The ISA to emulate with qemu-user.")
@click.option("--cpu", default=None, help="qemu CPU model (default: the bundle target's emulation_cpu, else max).")
@_with_fleet
def verify_cmd(bundle, emulate, cpu, inventory, limit, forks, hosts, identity, devices_file, remote_root):
    """Run BUNDLE's golden self-test on an emulated ISA (--emulate) and compare with this
    host, or re-verify what the devices serve as BUNDLE's current version (--inventory...)."""
    from edgepack_runtime import open_bundle

    from .emulate import verify_emulated

    if emulate is None:
        name = open_bundle(bundle).manifest.name
        with _fleet(hosts, identity, devices_file, inventory, limit, remote_root) as fleet:
            outcomes = fleet.run("verify", [h.name for h in fleet.hosts],
                                {"edgepack_bundle_name": name}, forks)
        rows = []
        for o in outcomes.values():
            report = o.step_json("verify") or {}
            tested = [r for r in report.get("results", []) if r["result"] in ("passed", "failed")]
            passed = sum(r["result"] == "passed" for r in tested)
            sig = report.get("signature") or {}
            rows.append((o.host, o.status, f"{passed}/{len(tested)} passed" if tested else "-",
                         "verified" if sig.get("verified") else "signed" if sig.get("signed") else "none",
                         o.error or ""))
        console.print(_outcome_table(f"verify {name} (current version)", rows,
                                     ("host", "result", "self-test", "signature", "detail")))
        _fail_hosts("verification", outcomes, len(fleet.hosts))
        return

    cpu = cpu or open_bundle(bundle).manifest.target.get("emulation_cpu")
    report = verify_emulated(bundle, cpu, _progress, arch=emulate)
    console.print(_emulated_table(report))
    failed = [r.artifact for r in map(Verdict.from_dict, report["results"]) if not r.passed]
    if failed:
        fail(f"{', '.join(failed)} fail(s) on emulated {emulate}: do not ship them to {emulate} devices as they are")
