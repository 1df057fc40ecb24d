"""`edgepack-runtime`: inspect, run and verify a bundle on the device."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional, Sequence

import click
import numpy as np

from .autoselect import cached_choice
from .bench import BenchSettings, run_bench
from .bundle import open_bundle
from .dims import size_label
from .errors import BackendUnavailableError, EdgepackError, InputError, TelemetryError, UsageError, causes
from .files import atomic_write
from .model import choose_artifact, default_reason, load
from .report import artifacts_table, make_console, one_line, plain
from .textui import HAVE_RICH, Table

if TYPE_CHECKING:
    from .manifest import Postprocessing
    from .model import Model
    from .postprocess import Detection, Prediction

console = make_console()


USAGE_EXIT = 2  # as click's own usage errors


def fail(message: str, code: int = 1, causes: Sequence[str] = ()) -> NoReturn:
    """Print one line on stderr (and, verbose, one per cause under it) and exit non-zero:
    the only way errors leave the CLI."""
    stderr = make_console(stderr=True)
    stderr.print(f"[bold red]error:[/] {plain(one_line(message))}", highlight=False, soft_wrap=True)
    for cause in causes:
        stderr.print(f"  caused by: {plain(one_line(cause))}", highlight=False, soft_wrap=True)
    sys.exit(code)


class ErrorLineGroup(click.Group):
    """Turn every EdgepackError into one line and exit code 1 (2 for a UsageError), never
    a traceback. The packager's CLI uses it too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgepackError as exc:
            self.report(exc)
            fail(str(exc), USAGE_EXIT if isinstance(exc, UsageError) else 1, causes(exc) if self.verbose() else ())

    def report(self, exc: EdgepackError) -> None:
        """Print what belongs with the error line (subclasses: e.g. a build's table)."""

    def verbose(self) -> bool:
        """Whether to print the error's causes under it (subclasses: the packager's -v)."""
        return False


@click.group(cls=ErrorLineGroup)
@click.version_option(package_name="edgepack-runtime")
def main() -> None:
    """Run edgepack bundles on this device."""


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest, the default and its reason as JSON.")
def info(bundle: Path, as_json: bool) -> None:
    """Show a bundle's target, tensors, artifacts and which one runs by default."""
    b = open_bundle(bundle)
    m = b.manifest
    if as_json:
        try:
            default, reason = choose_artifact(b).name, default_reason(b)
        except EdgepackError as exc:
            default, reason = None, str(exc)
        auto = cached_choice(b)
        click.echo(json.dumps({"manifest": json.loads(m.to_json()), "default_artifact": default,
                               "default_reason": reason, "auto_choice": auto.to_dict() if auto else None}, indent=2))
        return
    console.print(f"[bold]{plain(m.name)}[/]  target {plain(m.target.get('id'))}  created {plain(m.created)}  "
                  f"schema {plain(m.schema_version)}")
    for label, specs in (("inputs", m.inputs), ("outputs", m.outputs)):
        console.print(f"{label}: " + ", ".join(plain(s.describe()) for s in specs))
    try:
        default, reason = choose_artifact(b).name, default_reason(b)
    except EdgepackError as exc:
        default, reason = None, str(exc)
    console.print(artifacts_table(m, default))
    console.print(f"default artifact here: [bold]{plain(default or 'none')}[/] ({plain(reason)})")
    auto = cached_choice(b)
    if auto is None:
        console.print("auto choice on this device: not measured yet (load with artifact='auto' or "
                      "`edgepack-runtime bench --artifact auto`)")
    else:
        console.print(f"auto choice on this device: [bold]{plain(auto.artifact)}[/] × {auto.threads} thread(s), "
                      f"p50 {auto.p50_ms:.3f} ms, measured {plain(auto.created)}")
        evidence = ", ".join(f"{e.artifact}×{e.threads} {e.p50_ms:.3f}" for e in auto.evidence)
        console.print(f"  trial p50 (ms): {plain(evidence)}", highlight=False)
    console.print("toolchain: " + plain(", ".join(f"{k} {v}" for k, v in m.toolchain.items())), highlight=False)


def _parse_inputs(pairs: tuple[str, ...]) -> dict[str, np.ndarray]:
    feeds = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"--input {pair!r} must look like NAME=FILE.npy, e.g. --input image=x.npy")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read --input {name}={file} ({exc}); pass a .npy file written by np.save") from exc
    return feeds


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="One per model input.")
@click.option("--image", type=click.Path(path_type=Path), help="A JPEG/PNG, preprocessed as the bundle declares; "
              "or a folder: each image in it, in name order, one line each.")
@click.option("--text", help="A text, tokenized by the bundle's tokenizer.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Labels to print (default: the bundle's).")
@click.option("--artifact", default=None, help="Artifact name (default: the bundle's preferred one).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Default: the target's.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer (or outputs) as JSON.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Write outputs to this .npz.")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=None,
              help="Detectors: keep boxes scoring at least this (default: the bundle's).")
@click.option("--iou-threshold", type=click.FloatRange(0, 1), default=None,
              help="Detectors: drop a box overlapping a better one of its class by more IoU (default: the bundle's).")
@click.option("--annotate", type=click.Path(path_type=Path), default=None, metavar="OUT.jpg",
              help="Detectors and dense models: draw the boxes or the mask onto the --image and write it here (a "
                   "folder for an --image folder).")
def run(bundle: Path, inputs: tuple[str, ...], image: Optional[Path], text: Optional[str], top_k: Optional[int],
        artifact: Optional[str], threads: Optional[int], as_json: bool, output: Optional[Path],
        score_threshold: Optional[float], iou_threshold: Optional[float], annotate: Optional[Path]) -> None:
    """Run one inference: on .npy tensors, an --image or a --text; or every image of an --image folder."""
    raw = [given for given in (bool(inputs), image is not None, text is not None) if given]
    if len(raw) != 1:
        raise UsageError("give exactly one of --input NAME=FILE.npy (repeatable), --image FILE or --text TEXT")
    drawing: Optional[tuple[Path, Path]] = None  # --annotate: the image, and where its drawing goes
    if annotate is not None:
        if image is None:
            raise UsageError("--annotate draws a detector's boxes or a dense model's mask onto the --image; give "
                             "--image FILE")
        drawing = (image, annotate)
    if inputs and (score_threshold is not None or iou_threshold is not None):
        raise UsageError("--score-threshold and --iou-threshold apply to --image predictions, not to --input tensors")
    if image is not None and image.is_dir():
        if output is not None:
            raise UsageError("-o writes the outputs of one inference; for an --image folder use --json (one line "
                             "per image)")
        _run_folder(bundle, image, annotate, as_json, artifact=artifact, threads=threads, top_k=top_k,
                    score_threshold=score_threshold, iou_threshold=iou_threshold)
        return
    if drawing is not None:
        from .annotate import check_destination

        check_destination(*drawing)
    model = load(bundle, artifact=artifact, threads=threads, telemetry=True)
    takes = model.raw_input_kind()
    if not inputs and takes != ("image" if image is not None else "text"):
        hint = (f"it takes --{takes}" if takes else
                "it takes tensors: --input NAME=FILE.npy (rebuild with --preprocess or --tokenizer for raw inputs)")
        wanted = "image" if image is not None else "text"
        raise UsageError(f"bundle {model.bundle.manifest.name!r} declares no {wanted} preprocessing; {hint}")
    prediction: Optional[Prediction] = None
    drawn: Optional[str] = None  # what --annotate drew
    if inputs:
        outputs = model.run(_parse_inputs(inputs))
    else:
        prediction = model.predict(str(image) if image is not None else text, top_k=top_k,
                                   score_threshold=score_threshold, iou_threshold=iou_threshold)
        outputs = prediction.outputs
        if drawing is not None:
            if not _draws(model.bundle.manifest.postprocessing):
                raise UsageError(f"--annotate draws boxes or masks; bundle {model.bundle.manifest.name!r} answers "
                                 "with neither")
            from .annotate import write_annotated

            write_annotated(drawing[0], prediction, drawing[1])
            drawn = (f"{len(prediction.detections)} detection(s)" if prediction.detections is not None
                     else "the mask")
    if output:
        np.savez(output, allow_pickle=True, **outputs)  # numpy's default, named: no output is taken for it
        console.print(plain(f"wrote {', '.join(outputs)} to {output} ({model.artifact.name})"), highlight=False)
    elif as_json:
        answer = prediction.to_dict() if prediction else {"outputs": {k: v.tolist() for k, v in outputs.items()}}
        click.echo(json.dumps({"artifact": model.artifact.name, **answer}, indent=2))
    else:
        _print_answer(model, prediction, outputs)
    if prediction is not None and not as_json and not output:
        console.print(f"preprocess {prediction.preprocess_ms:.2f} ms, inference {prediction.inference_ms:.2f} ms, "
                      f"postprocess {prediction.postprocess_ms:.2f} ms", style="dim")
    if drawn is not None and not as_json:
        console.print(f"drew {drawn} onto {plain(annotate)}", highlight=False)


def _draws(post: Optional[Postprocessing]) -> bool:
    """Whether the bundle's answers can be drawn onto an image (--annotate)."""
    from .tasks import answering

    return post is not None and answering(post.kind).draws


def _run_folder(bundle: Path, folder: Path, annotate: Optional[Path], as_json: bool, artifact: Optional[str],
                threads: Optional[int], **answer: Any) -> None:
    """`run --image DIR`: every image of the folder through predict_many, one line (or one
    JSON object) per image as each answer comes, drawings into the --annotate folder."""
    import time

    from .folder import annotation_paths, answer_line, image_files
    from .stream import default_workers

    files = image_files(folder)
    drawings = annotation_paths(files, annotate) if annotate is not None else None
    model = load(bundle, artifact=artifact, threads=threads, telemetry=True)
    name = model.bundle.manifest.name
    if model.raw_input_kind() != "image":
        raise UsageError(f"bundle {name!r} declares no image preprocessing; it takes "
                         + (f"--{model.raw_input_kind()}" if model.raw_input_kind() else "--input NAME=FILE.npy"))
    post = model.bundle.manifest.postprocessing
    if drawings is not None and not _draws(post):
        raise UsageError(f"--annotate draws boxes or masks; bundle {name!r} answers with neither")
    start = time.perf_counter()
    for i, prediction in enumerate(model.predict_many([str(f) for f in files], **answer)):
        if as_json:
            click.echo(json.dumps({"image": files[i].name, "artifact": model.artifact.name, **prediction.to_dict()}))
        else:
            console.print(plain(answer_line(files[i].name, prediction)), highlight=False, soft_wrap=True)
        if drawings is not None:
            from .annotate import write_annotated

            write_annotated(files[i], prediction, drawings[i])
    seconds = time.perf_counter() - start
    if not as_json:
        drew = f", drawings in {annotate}" if drawings is not None else ""
        console.print(plain(f"{len(files)} image(s) in {seconds:.2f} s: {len(files) / seconds:.1f} images/s "
                            f"({model.artifact.name}, {model.threads} thread(s), {default_workers(model.threads)} "
                            f"worker(s){drew})"), style="dim", highlight=False)


def _print_answer(model: Model, prediction: Optional[Prediction], outputs: dict[str, np.ndarray]) -> None:
    """The answer on the console: top labels, detections, a mask, an embedding, or the raw outputs."""
    title = f"{model.bundle.manifest.name} ({model.artifact.name})"
    if prediction is not None and prediction.top is not None:
        table = Table(title=plain(title))
        table.add_column("label")
        table.add_column("score", justify="right")
        for label, score in prediction.top:
            table.add_row(plain(label), f"{score:.4f}")
        console.print(table)
    elif prediction is not None and prediction.detections is not None:
        console.print(_detections_table(prediction.detections, title))
    elif prediction is not None and prediction.mask is not None:
        from .postprocess import mask_summary

        console.print(plain(f"{title}: {mask_summary(prediction.mask)}"), highlight=False)
    elif prediction is not None and prediction.embedding is not None:
        vector = prediction.embedding
        console.print(f"[bold]embedding[/] {vector.size} values, L2 norm {np.linalg.norm(vector):.4f} "
                      f"({plain(model.artifact.name)})")
        console.print(plain(np.array2string(vector, precision=4, threshold=16)), highlight=False)
    else:
        for name, value in outputs.items():
            console.print(f"[bold]{plain(name)}[/] {list(value.shape)} {value.dtype} ({plain(model.artifact.name)})")
            console.print(plain(np.array2string(value, precision=4, threshold=64)), highlight=False)


def _detections_table(detections: Sequence[Detection], title: str) -> Table:
    """label, score, box (x1, y1, x2, y2 in the image's pixels); labels come from the
    bundle, so they are escaped: rich would read "[red]" in one as markup."""
    table = Table(title=f"{plain(title)}: {len(detections)} detection(s)")
    table.add_column("label")
    table.add_column("score", justify="right")
    table.add_column("box (x1, y1, x2, y2)", justify="right")
    for label, score, *box in detections:
        table.add_row(plain(label), f"{score:.3f}", ", ".join(f"{v:.1f}" for v in box))
    return table


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--artifact", default=None, help="Check only this artifact.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (same exit codes).")
def verify(bundle: Path, artifact: Optional[str], as_json: bool) -> None:
    """Check every file's sha256 and run each artifact's golden self-test."""
    from .verification import verify_bundle

    report = verify_bundle(open_bundle(bundle), artifact)
    results = [verdict.to_dict() for verdict in report["results"]]
    if as_json:
        click.echo(json.dumps({**{k: report[k] for k in ("bundle", "integrity", "signature")}, "results": results},
                              indent=2))
    else:
        console.print(f"integrity: all {report['integrity']['files']} files match their sha256")
        sig = report["signature"]
        console.print("signature: " + plain(f"verified, signed by {sig['key']}" if sig["verified"] else
                                             f"present, not checked ({sig['reason']})" if sig["signed"] else "none"),
                      highlight=False)
        table = Table(title=f"self-test {plain(report['bundle'])}")
        for column in ("artifact", "result", "cosine vs PyTorch", "max |diff| vs PyTorch", "tolerance",
                       "cosine vs build host", "samples"):
            table.add_column(column)
        for r in results:
            if r["result"] not in ("passed", "failed"):
                table.add_row(plain(r["artifact"]), f"[yellow]{plain(r['reason'])}[/]", "-", "-", "-", "-", "-")
                continue
            verdict = "[green]passed[/]" if r["result"] == "passed" else "[red]FAILED[/]"
            cosine = ("nan" if r["cosine"] is None else f"{r['cosine']:.5f}") + (
                f" (≥ {r['min_cosine']})" if r["min_cosine"] is not None else "")
            diff = "nan" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3e}"
            own = "-" if r["own_min_cosine"] is None else (
                ("nan" if r["own_cosine"] is None else f"{r['own_cosine']:.6f}") + f" (≥ {r['own_min_cosine']}, "
                + ("same kernels" if r["same_kernels"] else "other kernels") + ")")
            table.add_row(plain(r["artifact"]), verdict, cosine, diff, f"{r['tolerance']:.1e}", own,
                          str(r["samples"]))
        console.print(table)
    if report["failed"]:
        fail(f"{report['failed']} artifact(s) differ from PyTorch, or from their own outputs on the build host, "
             "beyond their tolerance on this device; do not deploy them, rebuild or report the difference")
    if not report["tested"]:
        fail("no artifact could be tested here; install a backend, e.g. pip install 'edgepack-runtime[onnx]'")


if TYPE_CHECKING:  # click's ParamType is generic since 8.2, and the runtime supports click 8.0 and later
    _ParamType = click.ParamType[list[int], Any]
else:
    _ParamType = click.ParamType


class ThreadCounts(_ParamType):
    """`--threads 1,2,4`: one or more thread counts, as every bench command spells it."""

    name = "1,2,4"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            threads = [int(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma list of thread counts, e.g. 1,2,4", param, ctx)
        if not threads or min(threads) < 1:
            self.fail("thread counts must be at least 1, e.g. 1,2,4", param, ctx)
        return threads


THREAD_COUNTS = ThreadCounts()


def _sizes(texts: tuple[str, ...]) -> dict[str, Sequence[int]] | None:
    """--size seq=16,128 (repeatable) → {"seq": [16, 128]}."""
    sizes: dict[str, Sequence[int]] = {}
    for text in texts:
        name, _, values = text.partition("=")
        try:
            sizes[name.strip()] = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            sizes[name.strip()] = []
        if not name.strip() or not sizes[name.strip()]:
            raise click.BadParameter(f"{text!r} is not NAME=SIZES, e.g. seq=16,128", param_hint="--size")
    return sizes or None


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--artifact", default="all", show_default=True, help="An artifact name, all, or auto.")
@click.option("--threads", type=THREAD_COUNTS, default=None, help="Thread counts (default: the target's).")
@click.option("--warmup", type=click.IntRange(min=0), default=BenchSettings.warmup, show_default=True)
@click.option("--warmup-seconds", type=click.FloatRange(min=0), default=BenchSettings.warmup_seconds, show_default=True)
@click.option("--runs", type=click.IntRange(min=2), default=BenchSettings.runs, show_default=True)
@click.option("--min-seconds", type=click.FloatRange(min=0), default=BenchSettings.min_seconds, show_default=True)
@click.option("--inputs", type=click.Choice(["real", "random"]), default="real", show_default=True)
@click.option("--size", "size_texts", multiple=True, metavar="seq=16,128",
              help="Sizes of a dynamic dim to measure at (repeatable; default: the size it was built at).")
@click.option("--image", type=click.Path(path_type=Path), help="Measure preprocessing on this image "
              "(default: a synthetic 640x480 JPEG); bundles that declare image preprocessing.")
@click.option("--text", help="Measure tokenizing this text (default: an everyday sentence).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the result JSON here.")
def bench(bundle: Path, artifact: str, threads: Optional[list[int]], warmup: int, warmup_seconds: float, runs: int,
          min_seconds: float, inputs: str, size_texts: tuple[str, ...], image: Optional[Path], text: Optional[str],
          output: Optional[Path]) -> None:
    """Measure latency per artifact x threads (x size), each in a fresh process (docs/bench-format.md)."""
    settings = BenchSettings(warmup=warmup, warmup_seconds=warmup_seconds, runs=runs,
                             min_seconds=min_seconds, inputs=inputs)
    sizes = _sizes(size_texts)
    if console.is_terminal and HAVE_RICH:  # without rich: no progress bar, the same result
        from rich.progress import Progress

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("benchmarking", total=None)
            result = run_bench(bundle, artifact, threads, settings,
                               lambda label, done, total: bar.update(task, description=plain(label),
                                                                     completed=done, total=total),
                               sizes=sizes, image=image, text=text)
    else:
        result = run_bench(bundle, artifact, threads, settings, sizes=sizes, image=image, text=text)
    table = Table(title=plain(f"{result['bundle']['name']} on {result['device']['name']} ({result['device']['cpu']})"))
    whole = any("whole_call" in r for r in result["results"])  # bench schema 1.5: bundles that take raw inputs
    for column in ("artifact", "threads", "backend", "p50 ms", "p90 ms", "p99 ms", "inf/s", "cold start ms", "RSS MB",
                   *(("call p50 ms", "fps loop", "fps stream") if whole else ())):
        table.add_column(column, no_wrap=True)
    for r in result["results"]:
        lat = r["latency_ms"]
        at = f" {size_label(r['sizes'])}" if "sizes" in r else ""
        call = r.get("whole_call")
        stream = (f"{call['latency_ms']['p50']:.3f}", f"{r['stream']['loop_fps']:.1f}",
                  f"{r['stream']['pipelined_fps']:.1f} ({r['stream']['speedup']:.2f}x)") if call else ("-",) * 3
        table.add_row(plain(r["artifact"] + at), str(r["threads"]), plain(f"{r['backend']} {r['backend_version']}"),
                      f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}", f"{r['throughput_per_s']:.0f}",
                      f"{r['cold_start_ms']:.0f}", f"{r['peak_rss_mb']:.0f}", *(stream if whole else ()))
    console.print(table)
    if whole:
        console.print("call: decode + preprocess + inference + postprocess of one predict(); fps: frames per second "
                      "over the same input repeated, a loop of predict() vs a stream through predict_many() (the next "
                      "frames prepared while others infer, from 2 threads on 2 at once, each on a session of its own "
                      "with a share of the threads), medians of alternating rounds", style="dim", highlight=False)
    pre = result.get("preprocess")
    if pre:
        steps = ", ".join(f"{name.replace('_', ' ')} {ms:.3f}" for name, ms in pre["steps_p50_ms"].items())
        by = f"; resize by {plain(pre['resize'])}" if "resize" in pre else ""  # bench schema 1.4
        shapes = ", ".join(f"{'x'.join(map(str, s))}" for s in pre["tensors"].values())
        console.print(f"preprocess {plain(pre['input'])} → {shapes}: p50 {pre['latency_ms']['p50']:.3f} ms, "
                      f"p90 {pre['latency_ms']['p90']:.3f} ms ({steps} ms{by}), single-threaded, per call",
                      highlight=False)
    post = result.get("postprocess")
    if post:
        steps = ", ".join(f"{name} {ms:.3f}" for name, ms in post["steps_p50_ms"].items())
        console.print(f"postprocess {plain(post['output'])} (decode + NMS, {post['candidates_mean']:.0f} candidates → "
                      f"{post['detections_mean']:.1f} detections on average over {post['samples']} golden outputs): "
                      f"p50 {post['latency_ms']['p50']:.3f} ms, p90 {post['latency_ms']['p90']:.3f} ms ({steps} ms), "
                      "single-threaded, per call", highlight=False)
    if output:
        atomic_write(output, json.dumps(result, indent=2) + "\n")  # never half a result over a good one
        console.print(f"wrote {plain(output)}", highlight=False)


_store_option = click.option("--store", type=click.Path(path_type=Path), default=Path("~/.edgepack/store"),
                             show_default=True, help="The bundle store: one folder per bundle name, versions inside.")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@_store_option
@click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True, help="Versions kept per bundle.")
@click.option("--no-activate", is_flag=True, help="Store and verify, but leave the current version active.")
@click.option("--require-signature", is_flag=True, help="Refuse a bundle without a signature by a trusted key.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def install(bundle: Path, store: Path, keep: int, no_activate: bool, require_signature: bool, as_json: bool) -> None:
    """Copy BUNDLE into the store, verify it there, then make it current (docs/fleet.md)."""
    from .store import install as install_bundle

    done = install_bundle(bundle, store, keep=keep, activate_it=not no_activate, require_signature=require_signature)
    if as_json:
        click.echo(json.dumps(done.to_dict(), indent=2))
    elif done.verified:
        state = "active" if done.active else "stored, not active"
        console.print(f"{plain(done.name)} {plain(done.version)}: verified, {state} ({done.seconds:.1f} s)")
    if not done.verified:
        fail(f"{done.name} {done.version} was not activated: {done.reason}; the current version keeps serving")


@main.command()
@click.argument("name")
@click.argument("version")
@_store_option
def activate(name: str, version: str, store: Path) -> None:
    """Make a stored, verified VERSION of bundle NAME current."""
    from .store import activate as activate_version

    console.print(f"{plain(name)}: {plain(activate_version(store, name, version))} is current")


@main.command()
@click.argument("name")
@_store_option
def rollback(name: str, store: Path) -> None:
    """Make the version that was current before this one current again."""
    from .store import rollback as roll_back

    console.print(f"{plain(name)}: rolled back to {plain(roll_back(store, name))}")


@main.command()
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
def status(store: Path, as_json: bool) -> None:
    """What is active in the store, since when, and what else is stored."""
    from .store import status as store_status

    bundles = store_status(store)
    if as_json:
        click.echo(json.dumps({"store": str(store), "bundles": bundles}, indent=2))
        return
    table = Table(title=f"bundle store {plain(store)}")
    for column in ("bundle", "version", "state", "created", "last activated", "self-test", "signature"):
        table.add_column(column, no_wrap=True)
    for b in bundles:
        for v in b["versions"]:
            check = v["verification"] or {}
            sig = check.get("signature") or {}
            table.add_row(plain(b["name"]), plain(v["version"]), "[green]active[/]" if v["active"] else "stored",
                          plain(v["created"] or "?"), plain(v["last_activated"] or "-"),
                          "passed" if check.get("passed") else "-",
                          "verified" if sig.get("verified") else "signed" if sig.get("signed") else "none")
    console.print(table)


@main.group()
def telemetry() -> None:
    """Local inference records: summary, export, purge (docs/telemetry.md)."""


_db_option = click.option("--db", type=click.Path(path_type=Path), default=None,
                          help="Telemetry database (default: $EDGEPACK_TELEMETRY_DB or the XDG data dir).")


def _db(db: Path | None) -> Path:
    from .telemetry import default_path

    path = db or default_path()
    if not path.exists():
        raise TelemetryError(f"no telemetry database at {path}; nothing has been recorded yet "
                          "(telemetry is on for the CLI and server, opt-in with load(..., telemetry=True))")
    return path


@telemetry.command("summary")
@_db_option
@click.option("--since", default=None, metavar="1h", help="Only the last 30s / 15m / 1h / 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def telemetry_summary(db: Optional[Path], since: Optional[str], as_json: bool) -> None:
    """Count, error rate, p50/p90/p99 latency per artifact, and input drift."""
    from .telemetry_report import summary

    try:
        data = summary(_db(db), since)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=plain(f"telemetry {data['database']}" + (f" (last {since})" if since else "")))
    for column in ("bundle", "artifact", "count", "error rate", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(column, no_wrap=True)
    for a in data["artifacts"]:
        lat = a["latency_ms"]
        table.add_row(plain(a["bundle"]), plain(a["artifact"]), str(a["count"]), f"{a['error_rate']:.2%}",
                      *(f"{lat[k]:.3f}" if lat[k] is not None else "-" for k in ("p50", "p90", "p99")))
    console.print(table)
    for d in data["drift"]:
        flag = "[red]DRIFT[/]" if d["drifted"] else "ok"
        console.print(f"drift {plain(d['bundle'])} input {plain(d['input'])}: PSI {d['psi']:.3f} {flag} "
                      f"({plain(d['at'])})")
    console.print(f"dropped records: {data['dropped']}; database {data['database_bytes'] / 1024:.0f} KiB")


@telemetry.command("export")
@_db_option
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "prometheus"]), default="json", show_default=True)
@click.option("--since", default=None, metavar="1h")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write (atomically); default stdout.")
def telemetry_export(db: Optional[Path], fmt: str, since: Optional[str], output: Optional[Path]) -> None:
    """Export as JSON, CSV or Prometheus text (node_exporter textfile collector)."""
    from .telemetry_report import export

    try:
        text = export(_db(db), fmt, since)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if output is None:
        click.echo(text, nl=False)
        return
    atomic_write(output, text)  # the collector never reads a half file
    console.print(f"wrote {plain(output)}", highlight=False)


@telemetry.command("purge")
@_db_option
@click.option("--yes", is_flag=True, help="Do not ask.")
def telemetry_purge(db: Optional[Path], yes: bool) -> None:
    """Delete every telemetry record."""
    from .telemetry_report import purge

    path = _db(db)
    if not yes and not click.confirm(f"delete all telemetry in {path}?"):
        return
    purge(path)
    console.print(f"purged {plain(path)}", highlight=False)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Any non-loopback address needs --token-file.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--artifact", default=None, help="An artifact name, or auto (default: the bundle's preferred one).")
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--token-file", type=click.Path(path_type=Path), help="File holding the bearer token clients must send.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests in flight before answering 503.")
@click.option("--timeout", type=click.FloatRange(min=0.001), default=10.0, show_default=True,
              help="Seconds per request before answering 504.")
def serve(bundle: Path, host: str, port: int, artifact: Optional[str], threads: Optional[int],
          token_file: Optional[Path], max_concurrency: int, timeout: float) -> None:
    """Serve BUNDLE over HTTP: /v1/predict, /v1/model, /healthz, /metrics, /docs.

    BUNDLE may be a bundle store's `current` link (STORE/NAME/current): the server then
    follows it, switching to each version `install`, `activate` or `rollback` makes
    current without failing a request."""
    try:
        import uvicorn

        from .serve import Live, create_app, header_deadline_protocol
    except ImportError as exc:
        raise BackendUnavailableError(f"serving needs the serve extra ({exc}); "
                                      "pip install 'edgepack-runtime[serve]'") from exc
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {token_file} ({exc.strerror})") from exc
        if not token:
            raise UsageError(f"--token-file {token_file} is empty; put a long random token in it")
    elif not _is_loopback(host):
        raise UsageError(f"refusing to serve on {host} without a token: anyone on the network could use it; "
                         "pass --token-file FILE (or bind 127.0.0.1)")
    from .telemetry import enabled_by_env

    def load_version(path: Path) -> Model:
        return load(path, artifact=artifact, threads=threads, telemetry=enabled_by_env())

    model = load_version(bundle)
    model.warm_up()  # ready means able to answer: a damaged artifact stops here, before the port opens
    live = Live(model)
    if Path(bundle).is_symlink():
        live.follow(Path(bundle), load_version, lambda line: console.print(plain(line), highlight=False))
    asgi, _ = create_app(live, token=token, max_concurrency=max_concurrency, timeout_s=timeout)
    console.print(plain(f"serving {model.bundle.manifest.name} ({model.artifact.name}, {model.threads} thread(s)) "
                        f"on http://{host}:{port}  telemetry: {'on' if model.telemetry else 'off'}"), highlight=False)
    uvicorn.run(asgi, host=host, port=port, log_level="warning", http=header_deadline_protocol())


if __name__ == "__main__":
    main()
