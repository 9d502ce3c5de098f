"""The ``tracekit`` command line: a thin click layer over the library.

Heavy modules (Polars, Numba, kernels) are imported inside the commands, so
``tracekit --help`` stays instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

EPILOG = """\b
Examples:
  tracekit info sample_traces/h100_training
  tracekit info trace.csv --utc-offset -7h --json
  tracekit convert raw_logs/ dataset/ --gpus-per-host 8 --gpu-model H100
  tracekit synth training -o synth/ --gpus 64 --seconds 30 --gpu-model H100 --seed 1
"""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def read_options(fn):
    """Options that change how raw traces are read, shared by every reading command."""
    decorators = [
        click.option("--utc-offset", "utc_offset", metavar="OFFSET",
                     help="Offset of zone-less local timestamps from UTC, e.g. -7h, +05:30, -25200."),
        click.option("--tz", metavar="ZONE", help="IANA zone of local timestamps (handles DST), e.g. Europe/Paris."),
        click.option("--gpus-per-host", type=click.IntRange(min=1),
                     help="GPUs per sweep in nvidia-smi files without an index column (default: inferred)."),
        click.option("--host", help="Host name for files that carry none (default: the file name)."),
        click.option("--gpu-model", help="GPU model (H100, A100, B200, ...) for TDP and power semantics."),
        click.option("--power-unit", type=click.Choice(["W", "mW", "kW"]), help="Unit of unlabelled power values."),
        click.option("--time-unit", type=click.Choice(["s", "ms", "us", "ns"]), help="Unit of epoch timestamps."),
        click.option("--column", "columns", multiple=True, metavar="NAME=SOURCE",
                     help="Column mapping for generic CSV/Parquet, e.g. power_w=watts (repeatable)."),
        click.option("--format", "fmt", help="Force an input format (see `tracekit formats`)."),
        click.option("--topology", type=click.Path(exists=True, dir_okay=False),
                     help="Topology CSV/Parquet: gpu, host, rack, row, model, tdp_w, job."),
        click.option("--max-gap", default="5s", show_default=True, help="Longer gaps count as missing data."),
        click.option("--start", help="Start time (ISO) for formats logged without timestamps."),
        click.option("--interval", help="Sampling interval for formats logged without timestamps, e.g. 100ms."),
        click.option("--strict", is_flag=True, help="Make every data anomaly an error instead of a counted repair."),
    ]
    for dec in reversed(decorators):
        fn = dec(fn)
    return fn


def open_from_cli(path, kw: dict):
    """``tracekit.open`` with the shared read options as the CLI spells them."""
    from tracekit.errors import ParameterError
    from tracekit.traceset import open_trace
    from tracekit.units import parse_duration_s

    columns = {}
    for item in kw.pop("columns", ()) or ():
        if "=" not in item:
            raise ParameterError(f"--column takes NAME=SOURCE, got {item!r}")
        k, v = item.split("=", 1)
        columns[k.strip()] = v.strip()
    utc_offset = kw.pop("utc_offset", None)
    interval = kw.pop("interval", None)
    options = dict(
        utc_offset_s=parse_duration_s(utc_offset, what="--utc-offset", default_unit="s") if utc_offset else None,
        tz=kw.pop("tz", None),
        gpus_per_host=kw.pop("gpus_per_host", None),
        host=kw.pop("host", None),
        gpu_model=kw.pop("gpu_model", None),
        power_unit=kw.pop("power_unit", None),
        time_unit=kw.pop("time_unit", None),
        columns=columns,
        format=kw.pop("fmt", None),
        max_gap_s=parse_duration_s(kw.pop("max_gap", "5s"), what="--max-gap"),
        start=kw.pop("start", None),
        interval_s=parse_duration_s(interval, what="--interval") if interval else None,
        strict=kw.pop("strict", False),
    )
    if options["gpu_model"]:
        from tracekit.specs import gpu_spec

        gpu_spec(options["gpu_model"])  # unknown model -> clear error now
    topology = kw.pop("topology", None)
    debug = bool(click.get_current_context().find_root().params.get("debug"))
    return open_trace(path, topology=topology, debug=debug, **options)


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(context_settings=CONTEXT, epilog=EPILOG)
@click.version_option(package_name="tracekit", message="tracekit %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Analyze GPU power traces of LLM clusters: phases, cluster swings, what-if replay."""


@cli.command(epilog=EPILOG, context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True), nargs=-1, required=True)
@read_options
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable summary.")
def info(path, as_json: bool, **kw) -> None:
    """Formats, GPUs, hosts, time range, sampling and data quality of PATH."""
    ts = open_from_cli(list(path), kw)
    summary = ts.info()
    if as_json:
        emit_json(summary)
    else:
        from tracekit.report.terminal import print_info

        print_info(summary)


@cli.command(epilog=EPILOG, context_settings=CONTEXT)
@click.argument("src", type=click.Path(exists=True), nargs=-1, required=True)
@click.argument("dst", type=click.Path())
@read_options
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
def convert(src, dst, force: bool, **kw) -> None:
    """Read SRC (files or folders) and write the canonical dataset DST."""
    from tracekit.io.dataset import DatasetWriter

    ts = open_from_cli(list(src), kw)
    power = ts.power_semantics()
    from tracekit.schema import PowerSemantics

    with DatasetWriter(
        dst,
        topology=ts.topology,
        power=PowerSemantics(kind=power["kind"] if power["kind"] in ("instant", "average") else "unknown",
                             window_s=power.get("window_s")),
        quality=ts.quality,
        sources=ts.sources,
        overwrite=force,
    ) as writer:
        writer.write(ts.samples)
    d = ts.dataset_summary()
    click.echo(
        f"wrote {dst}: {d['samples']:,} samples, {d['gpus']} GPUs, {d['duration_s']:.1f} s "
        f"({ts.quality.rows_read:,} rows read, {ts.quality.n_excluded:,} excluded, "
        f"{len(ts.quality.files_failed)} file(s) failed)"
    )


def _check_time(ctx, param, value):
    """--since/--until written wrongly fail before the trace is read (``+DURATION``
    is resolved later, against the first sample)."""
    if value is not None:
        from tracekit.units import parse_time_ns

        parse_time_ns(value, origin_ns=0, what=f"--{param.name}")
    return value


def _check_threads(ctx, param, value):
    if value is not None and value < 1:
        from tracekit.errors import ParameterError

        raise ParameterError(f"--threads must be at least 1, got {value}")
    return value


def threads_option(fn):
    """--threads: the whole command (reading the input included) runs in a workers
    scope of that many threads, left when the command returns or fails; Polars, not
    imported yet, starts its own pool with as many (``POLARS_MAX_THREADS``)."""
    @functools.wraps(fn)
    def run(*args, **kw):
        from tracekit.engine.local import workers_scope

        threads = kw.get("threads")
        if threads is not None and "polars" not in sys.modules:
            os.environ["POLARS_MAX_THREADS"] = str(threads)
        with workers_scope(threads):
            return fn(*args, **kw)

    return click.option("--threads", type=int, callback=_check_threads,
                        help="Worker threads (default: every core).")(run)


def time_slice_options(fn):
    """--since/--until: the part of the trace a command works on."""
    fn = click.option("--until", metavar="TIME", callback=_check_time,
                      help="Up to TIME (exclusive), written like --since.")(fn)
    return click.option("--since", metavar="TIME", callback=_check_time,
                        help="From TIME: ISO 8601 (UTC unless it has an offset) or +DURATION after the first "
                             "sample (e.g. +10m); a dataset's row groups outside the range are not read.")(fn)


@cli.command(epilog=EPILOG, context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True), nargs=-1, required=True)
@read_options
@click.option("--workload", type=click.Choice(["auto", "training", "inference"]), default="auto", show_default=True,
              help="Phase model: training (compute/communication) or inference (idle/token/prompt).")
@click.option("--resolution", help="Grid step, e.g. 1ms (default: the median sampling period).")
@click.option("--windows", default="100ms,1s,2s,5s,60s", show_default=True, help="Swing windows, comma-separated.")
@click.option("--ramp-window", default="1s", show_default=True, help="Window for ramp rates.")
@click.option("--align", default="none", show_default=True,
              help="Per-host clock offsets: none, auto (cross-correlation on at most 65,536 grid cells from the "
                   "middle of the trace) or a CSV/Parquet file (host, offset_s).")
@click.option("--max-offset", default="500ms", show_default=True, help="Search bound of --align auto.")
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False),
              help="Grid rules TOML (window_change, ramp, band limits).")
@click.option("--fail-on", multiple=True, metavar="METRIC>VALUE",
              help="Exit 1 when a cluster metric exceeds VALUE, e.g. peak_over_tdp>0.9 (repeatable).")
@time_slice_options
@click.option("--memory-limit", default="2GiB", show_default=True, metavar="SIZE",
              help="Memory the analysis may use; a canonical dataset larger than this is streamed in GPU batches.")
@click.option("--engine", type=click.Choice(["auto", "memory", "stream"]), default="auto", show_default=True,
              help="memory: read the whole trace; stream: GPU batches from the dataset files; auto: by size.")
@threads_option
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run the batch tasks on a Dask distributed cluster (PATH must be a canonical dataset the "
                   "workers can read at the same path).")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write summary.json, tables and report.html.")
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable summary.")
def analyze(path, workload, resolution, windows, ramp_window, align, max_offset, rules_file, fail_on, since, until,
            memory_limit, engine, threads, scheduler, output, as_json, **kw) -> None:
    """Phases, time-aligned cluster power, swings, spectrum, events and grid rules of PATH."""
    from pathlib import Path

    from tracekit.analysis.analyze import AnalyzeOptions
    from tracekit.analysis.analyze import analyze as run_analyze
    from tracekit.analysis.rules import load_rules
    from tracekit.units import parse_duration_s, parse_size_bytes

    max_gap_s = parse_duration_s(kw.get("max_gap", "5s"), what="--max-gap")
    opts = AnalyzeOptions(
        workload=workload,
        resolution_s=parse_duration_s(resolution, what="--resolution") if resolution else None,
        max_gap_s=max_gap_s,
        windows_s=tuple(parse_duration_s(w, what="--windows") for w in windows.split(",") if w.strip()),
        ramp_window_s=parse_duration_s(ramp_window, what="--ramp-window"),
        max_offset_s=parse_duration_s(max_offset, what="--max-offset"),
        rules=load_rules(rules_file) if rules_file else [],
        memory_limit_bytes=parse_size_bytes(memory_limit, what="--memory-limit"),
        engine=engine,
        since=since,
        until=until,
        workers=threads,
    )
    if align not in ("none", "auto"):
        from tracekit.analysis.align import load_offsets

        if not Path(align).is_file():
            raise click.BadParameter(f"{align!r} is neither none, auto nor a file", param_hint="--align")
        opts.align = load_offsets(align)
    else:
        opts.align = align
    checks = [_parse_fail_on(f) for f in fail_on]
    ts = open_from_cli(list(path), kw)
    client = None
    if scheduler:
        from tracekit.engine.stream import connect

        client = connect(scheduler)
    try:
        result = _with_progress(lambda step: run_analyze(ts, opts, progress=step, client=client), quiet=as_json)
    finally:
        if client is not None:
            client.close()
    summary = result.summary()
    if output:
        from tracekit.report.outputs import write_analysis

        write_analysis(result, output)
    if as_json:
        emit_json(summary)
    else:
        from tracekit.report.terminal import print_analysis

        print_analysis(summary)
        if output:
            click.echo(f"wrote {output}/ (summary.json, tables, report.html)")
    breached = [f"{m} = {v} > {limit}" for m, limit, v in _evaluate_fail_on(checks, summary)]
    for b in breached:
        click.echo(f"tracekit: threshold breached: {b}", err=True)
    if result.violations or breached:
        raise click.exceptions.Exit(1)


def _parse_fail_on(text: str) -> tuple[str, float]:
    from tracekit.errors import ParameterError

    if ">" not in text:
        raise ParameterError(f"--fail-on takes METRIC>VALUE, e.g. peak_over_tdp>0.9; got {text!r}")
    metric, value = text.split(">", 1)
    try:
        return metric.strip(), float(value)
    except ValueError:
        raise ParameterError(f"--fail-on value must be a number, got {value!r}") from None


def _evaluate_fail_on(checks, summary):
    from tracekit.errors import ParameterError

    cluster = summary["levels"]["cluster"]["cluster"]
    for metric, limit in checks:
        if metric.startswith("swing_"):
            window = metric[len("swing_"):]
            v = cluster["swing"].get(window, {}).get("max_w")
        elif metric in cluster and not isinstance(cluster[metric], dict):
            v = cluster[metric]
        else:
            known = [k for k, x in cluster.items() if isinstance(x, (int, float))] + [
                f"swing_{w}" for w in cluster["swing"]]
            raise ParameterError(f"--fail-on: unknown metric {metric!r}; known: {', '.join(known)}")
        if v is not None and v > limit:
            yield metric, limit, v


def _with_progress(fn, quiet: bool):
    """Run ``fn(step)`` with a rich status line naming the current step (stderr)."""
    if quiet:
        return fn(lambda name: None)
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("reading") as status:
        return fn(lambda name: status.update(f"analyze: {name}"))


@cli.group(context_settings=CONTEXT, epilog=EPILOG)
def synth() -> None:
    """Generate synthetic traces with ground truth (training or inference)."""


def _synth_common(fn):
    decorators = [
        click.option("-o", "--output", required=True, type=click.Path(), help="Output dataset folder."),
        click.option("--format", "raw_format", default="canonical", show_default=True,
                     help="canonical, or a raw format to also exercise the readers: nvsmi_csv, "
                          "nvsmi_csv_noindex, dcgmi_dmon, dcgm_exporter, zeus_json (written as OUTPUT file)."),
        click.option("--gpus", type=int, help="Number of GPUs."),
        click.option("--seconds", type=float, help="Trace length in seconds."),
        click.option("--rate", "rate_hz", type=float, default=1000.0, show_default=True, help="Samples per second."),
        click.option("--gpu-model", help="GPU model from the spec table (H100, A100, B200, ...)."),
        click.option("--gpus-per-host", type=int, default=8, show_default=True),
        click.option("--host-offset-ms", type=float, default=0.0, show_default=True,
                     help="Spread of per-host clock offsets."),
        click.option("--drop-fraction", type=float, default=0.0, show_default=True, help="Share of samples dropped."),
        click.option("--average-window", "average_window_s", type=float,
                     help="Report a moving average over this many seconds (1 = H100 NVML power.draw)."),
        click.option("--update-period", "update_period_s", type=float,
                     help="Counter update period in seconds (repeated values in between)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--force", is_flag=True, help="Replace OUTPUT if it exists."),
    ]
    for dec in reversed(decorators):
        fn = dec(fn)
    return fn


def _run_synth(kind: str, output: str, raw_format: str, force: bool, params: dict) -> None:
    from tracekit import synth as synth_lib

    params = {k: v for k, v in params.items() if v is not None}
    gen = synth_lib.training if kind == "training" else synth_lib.inference
    if raw_format == "canonical":
        result = gen(output, overwrite=force, **params)
        truth = result.truth
        n_gpus = result.topology.height
        click.echo(f"wrote {output}: {kind} dataset, {n_gpus} GPUs x {truth.get('samples_per_gpu')} samples, "
                   "ground truth in manifest.json (synth) and truth_* columns")
    else:
        from pathlib import Path

        if Path(output).exists() and not force:
            from tracekit.errors import InputError

            raise InputError("output already exists (pass --force)", path=output)
        result = gen(None, **params)
        synth_lib.write_raw(result, output, raw_format)
        click.echo(f"wrote {output} ({raw_format})")


@synth.command("training", context_settings=CONTEXT)
@_synth_common
@click.option("--iteration", "iteration_s", type=float, default=1.0, show_default=True, help="Iteration time, s.")
@click.option("--compute-fraction", type=float, default=0.75, show_default=True)
@click.option("--stragglers", type=int, default=1, show_default=True)
@click.option("--checkpoint-every", "checkpoint_every_s", type=float, default=10.0, show_default=True)
@click.option("--noise-w", type=float, help="Per-sample noise (W, standard deviation).")
def synth_training(output, raw_format, force, **params) -> None:
    """Synchronous data-parallel training: compute/communication, stragglers, checkpoints."""
    _run_synth("training", output, raw_format, force, params)


@synth.command("inference", context_settings=CONTEXT)
@_synth_common
@click.option("--tp", type=int, default=1, show_default=True, help="Tensor-parallel group size.")
@click.option("--arrival-rate", "arrival_rate_hz", type=float, default=0.25, show_default=True,
              help="Poisson request arrivals per second (per group).")
@click.option("--noise-w", type=float, help="Per-sample noise (W, standard deviation).")
def synth_inference(output, raw_format, force, **params) -> None:
    """LLM serving: prompt bursts, token plateaus, idle."""
    _run_synth("inference", output, raw_format, force, params)


REPLAY_EPILOG = """\b
Examples:
  tracekit replay trace/ --cap 350                    cap every GPU at 350 W (1 s average)
  tracekit replay trace/ --cap 50% --scope rack=rack03  cap one rack at half its TDP
  tracekit replay trace/ --lock-mhz 1410 --cap 600    lock clocks, then cap
  tracekit replay trace/ --cap 300:700:50 -o out/     sweep: table, Pareto plot, replayed datasets
  tracekit replay trace/ --smooth floor=90%,down=2000 --storage energy_kwh=5,power_kw=50
"""


@cli.command(epilog=REPLAY_EPILOG, context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True), nargs=-1, required=True)
@read_options
@click.option("--cap", metavar="[LEVEL:]W|PCT%|START:STOP:STEP",
              help="Power cap per GPU: watts (350), percent of TDP (50%), or a sweep (300:700:50); with a "
                   "LEVEL (host, rack, row, cluster) a cap on each group's summed power: rack:40kW, "
                   "cluster:0.5MW, rack:80% (of the rack's summed TDP), rack:30kW:50kW:5kW.")
@click.option("--cap-window", default="1s", show_default=True,
              help="Controller window of the cap: the average power over it is held at the cap.")
@click.option("--lock-mhz", metavar="MHZ|START:STOP:STEP", help="SM clock lock, MHz, or a sweep (1000:1900:100).")
@click.option("--smooth", metavar="floor=..,up=..,down=..",
              help="Power smoothing: floor (W or % of TDP), ramp-up/down limits (W/s or %/s of TDP).")
@click.option("--storage", metavar="energy_j=..,power_w=..",
              help="Battery per rack: energy_j= (or energy_kwh=), power_w= (or power_kw=), "
                   "optional window=10s, efficiency=1, soc0=0.5.")
@click.option("--scope", default="cluster", show_default=True, metavar="cluster|LEVEL=NAME[,NAME]",
              help="Where lock, cap and smoothing apply: cluster, or gpu|host|rack|row=NAMES, e.g. rack=rack03.")
@click.option("--model-param", "model_params", multiple=True, metavar="[MODEL:]NAME=VALUE",
              help="Power-model override: a, g, idle_w, f0_mhz, tdp_w, beta_<phase> (repeatable).")
@click.option("--workload", type=click.Choice(["auto", "training", "inference"]), default="auto", show_default=True,
              help="Phase model: training (compute/communication) or inference (idle/token/prompt).")
@click.option("--sync", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Synchronous training: every GPU ends each iteration with the slowest.")
@click.option("--resolution", help="Grid step of the figures, e.g. 10ms (default: the median sampling period).")
@click.option("--windows", default="100ms,1s,2s,5s,60s", show_default=True, help="Swing windows, comma-separated.")
@time_slice_options
@click.option("--memory-limit", metavar="SIZE",
              help="Refuse a replay estimated above SIZE (replay holds the whole trace; default: 80% of RAM).")
@threads_option
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Write summary.json, tables, report.html and the replayed traces (canonical datasets).")
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable summary.")
def replay(path, cap, cap_window, lock_mhz, smooth, storage, scope, model_params, workload, sync, resolution,
           windows, since, until, memory_limit, threads, output, as_json, **kw) -> None:
    """What-if replay of PATH: power caps, clock locks, smoothing and storage (lock -> cap -> smoothing ->
    storage), with peak, swings, energy and slowdown per policy."""
    from tracekit.replay.engine import ReplayOptions
    from tracekit.replay.engine import replay as run_replay
    from tracekit.replay.model import params_from_cli
    from tracekit.units import parse_duration_s, parse_size_bytes

    opts = ReplayOptions(
        cap_window_s=parse_duration_s(cap_window, what="--cap-window"),
        workload=workload,
        sync=sync,
        resolution_s=parse_duration_s(resolution, what="--resolution") if resolution else None,
        max_gap_s=parse_duration_s(kw.get("max_gap", "5s"), what="--max-gap"),
        windows_s=tuple(parse_duration_s(w, what="--windows") for w in windows.split(",") if w.strip()),
        model_params=params_from_cli(model_params) or None,
        since=since,
        until=until,
        memory_limit_bytes=parse_size_bytes(memory_limit, what="--memory-limit") if memory_limit else None,
        workers=threads,
    )
    policy = dict(cap=cap, lock_mhz=lock_mhz, smoothing=smooth, storage=storage, scope=scope)
    _replay_check_policy(policy)
    ts = open_from_cli(list(path), kw)

    def run(step, on_trace=None):
        return run_replay(ts, options=opts, keep_traces=False, on_trace=on_trace, progress=step, **policy)

    if output:
        from pathlib import Path

        from tracekit.replay.report import safe_name, write_outputs, write_trace
        from tracekit.report.outputs import atomic_dir

        with atomic_dir(output) as tmp:
            def on_trace(name, arrays):
                write_trace(Path(tmp) / "traces" / safe_name(name), arrays, ts, name, None)

            result = _replay_progress(lambda step: run(step, on_trace), quiet=as_json)
            write_outputs(result, tmp)
    else:
        result = _replay_progress(run, quiet=as_json)
    summary = result.summary()
    if as_json:
        emit_json(summary)
    else:
        from tracekit.replay.report import print_replay

        print_replay(summary)
        if output:
            click.echo(f"wrote {output}/ (summary.json, policies.parquet, report.html, traces/)")


def _replay_check_policy(policy: dict) -> None:
    """Parse the policy options up front, so a typo fails before the trace is read."""
    from tracekit.replay.policy import build_policies

    if any(policy[k] is not None for k in ("cap", "lock_mhz", "smoothing", "storage")):
        build_policies(**policy)
    else:
        from tracekit.replay.policy import parse_scope

        parse_scope(policy["scope"])


def _replay_progress(fn, quiet: bool):
    """Run ``fn(step)`` with a rich status line naming the current step (stderr)."""
    if quiet:
        return fn(lambda name: None)
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("reading") as status:
        return fn(lambda name: status.update(f"replay: {name}"))


@cli.command(context_settings=CONTEXT)
def formats() -> None:
    """List the input formats tracekit detects."""
    from tracekit.io.registry import FORMATS

    for f in FORMATS:
        click.echo(f"{f.name:15s} {f.description}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: TracekitError -> one line on stderr and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="tracekit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        from tracekit.errors import TracekitError

        if debug:
            raise
        if isinstance(exc, TracekitError):
            click.echo(f"tracekit: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        if isinstance(exc, BrokenPipeError):
            sys.exit(1)
        click.echo(f"tracekit: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", err=True)
        sys.exit(3)
    sys.exit(0)
