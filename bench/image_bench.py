"""Image pipeline benchmark: ``python -m bench.image_bench`` (part of ``make bench``).

Runs the built-in stages (``validate,resize,format``, then the save under
``MEDIA_ROOT``) on three typical inputs made by Pillow from seeded noise, so
every run sees the same bytes:

- a 4000x3000 JPEG (photo-like: gradients, texture, grain; quality 90),
- a 1920x1080 PNG with a graded alpha channel,
- a 1200x800 WebP (quality 80).

1. Tasks per second on one thread (a bounded number of tasks after a warm-up),
   and for the JPEG on two threads (``ThreadPoolExecutor(2)``): on this
   2-core machine a ratio near 2x means Pillow releases the GIL while it works.
2. Memory per in-flight task: for each input, in a fresh process of its own,
   how far one task lifts the peak RSS (``ru_maxrss``) above the idle,
   warmed-up process, and the ``tracemalloc`` peak of one task (the Python
   heap allocated during the task: encoded output, base64, codec buffers;
   Pillow allocates pixel buffers in C, outside tracemalloc's view).

``MEDIA_ROOT`` is a temporary directory, removed afterwards.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from worker.config.settings import Settings
from worker.images import ImageConfig, PipelineResult, run_pipeline

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WARMUP = 2  # tasks run before timing (per thread when threaded)
THREADED_TASKS = 60
MEMORY_TASKS = 5  # sequential tasks per memory probe
PROBE_TIMEOUT = 120.0  # seconds one memory probe may take
MIB = 1024 * 1024
# The peak RSS a process starts with is its parent's at exec time (the kernel copies the
# high-water mark of the forked address space), so a probe spawned by a big benchmark process
# would report that process's peak. A small launcher in between starts the probe clean
# (and kills it if it overruns, as the launcher itself is what a timeout would kill).
LAUNCHER = f"import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], timeout={PROBE_TIMEOUT - 10}))"


@dataclass(frozen=True)
class Kind:
    """One typical input: how it is made and how many tasks the single-thread run times."""

    name: str
    label: str
    size: tuple[int, int]
    fmt: str
    alpha: bool
    tasks: int
    seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def make(self, size: tuple[int, int] | None = None) -> bytes:
        """The input's bytes (at another size for a warm-up image), the same every run."""
        buffer = io.BytesIO()
        photo(size or self.size, self.seed, alpha=self.alpha).save(buffer, self.fmt, **self.options)
        return buffer.getvalue()


KINDS = (
    Kind("jpeg", "4000x3000 JPEG q90", (4000, 3000), "JPEG", False, 30, 4000, {"quality": 90}),
    Kind("png", "1920x1080 PNG RGBA", (1920, 1080), "PNG", True, 20, 1920),
    Kind("webp", "1200x800 WebP q80", (1200, 800), "WEBP", False, 30, 1200, {"quality": 80}),
)
BY_NAME = {kind.name: kind for kind in KINDS}


def photo(size: tuple[int, int], seed: int, *, alpha: bool = False) -> Image.Image:
    """A photo-like image from seeded noise: smooth gradients, mid-scale texture and fine grain."""
    rng = random.Random(seed)
    width, height = size

    def noise(noise_size: tuple[int, int]) -> Image.Image:
        return Image.frombytes("L", noise_size, rng.randbytes(noise_size[0] * noise_size[1]))

    horizontal = Image.linear_gradient("L").rotate(90).resize(size)
    vertical = Image.linear_gradient("L").resize(size)
    blobs = noise((max(2, width // 64), max(2, height // 64))).resize(size, Image.Resampling.BICUBIC)
    image = Image.merge("RGB", (horizontal, vertical, blobs))
    texture = [noise((max(2, width // 8), max(2, height // 8))).resize(size, Image.Resampling.BILINEAR) for _ in "rgb"]
    image = Image.blend(image, Image.merge("RGB", texture), 0.3)
    image = Image.blend(image, noise(size).convert("RGB"), 0.06)
    if alpha:
        image.putalpha(Image.linear_gradient("L").resize(size))
    return image


def image_config(media_root: Path) -> ImageConfig:
    """The pipeline configuration of a worker whose ``MEDIA_ROOT`` is ``media_root`` (defaults otherwise)."""
    settings = Settings.from_env({"CALLBACK_SIGNING_SECRET": SECRET, "MEDIA_ROOT": str(media_root)})
    return ImageConfig.from_settings(settings)


@contextmanager
def scratch_media() -> Iterator[Path]:
    """A temporary ``MEDIA_ROOT``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="image-bench-") as directory:
        yield Path(directory)


def one_task(source: bytes, config: ImageConfig, task_id: str) -> PipelineResult:
    """One task through the configured stages; checks that the result was really resized."""
    result = run_pipeline(source, config, task_id=task_id)
    if min(result.width, result.height) != config.short_side:
        raise AssertionError(f"{task_id}: got {result.width}x{result.height}, not short side {config.short_side}")
    return result


@dataclass(frozen=True)
class Rate:
    """Tasks per second of one timed run, with the median seconds of each pipeline step."""

    tasks: int
    seconds: float
    cpu: float  # process CPU seconds (all threads) over the timed run
    steps: dict[str, float]
    output: str

    @property
    def per_second(self) -> float:
        """Tasks per second."""
        return self.tasks / self.seconds

    @property
    def cores(self) -> float:
        """CPU seconds per wall second: about 1 on one busy core, about 2 with both cores busy."""
        return self.cpu / self.seconds


def throughput(kind: Kind, source: bytes, config: ImageConfig, tasks: int, threads: int = 1) -> Rate:
    """Time ``tasks`` tasks on ``threads`` threads (after ``WARMUP`` tasks per thread)."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda n: one_task(source, config, f"warm-{kind.name}-{n}"), range(WARMUP * threads)))
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        results = list(pool.map(lambda n: one_task(source, config, f"bench-{kind.name}-{n}"), range(tasks)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    steps = {step: statistics.median(r.timings[step] for r in results) for step in results[0].timings}
    last = results[-1]
    output = f"{last.width}x{last.height} {last.format}, {last.size_bytes / 1024:.0f} KiB"
    return Rate(tasks, seconds, cpu, steps, output)


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _reset_peak() -> None:
    """Bring the peak RSS down to the current RSS (Linux >= 4.0); best effort."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def probe(kind: Kind, input_path: Path, media_root: Path) -> dict[str, float]:
    """In a fresh process: peak RSS growth of one task and of ``MEMORY_TASKS``, then one task's tracemalloc peak."""
    config = image_config(media_root)
    one_task(kind.make((480, 360)), config, "warm-small")  # codecs and lazy imports loaded, as in a running worker
    source = input_path.read_bytes()
    gc.collect()
    _reset_peak()
    baseline, resident = _peak_kib(), _rss_kib()
    one_task(source, config, "probe-0")
    first = _peak_kib()
    for n in range(1, MEMORY_TASKS):
        one_task(source, config, f"probe-{n}")
    after = _peak_kib()
    gc.collect()
    tracemalloc.start()
    one_task(source, config, "probe-traced")
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "baseline_mib": baseline / 1024,
        "resident_mib": resident / 1024,
        "first_mib": (first - baseline) / 1024,
        "after_mib": (after - baseline) / 1024,
        "traced_mib": traced / MIB,
    }


def memory(kind: Kind, input_path: Path, media_root: Path) -> dict[str, float]:
    """Run :func:`probe` for ``kind`` in a fresh process (via the launcher) and return its figures."""
    argv = [sys.executable, "-m", "bench.image_bench", "--probe", kind.name, str(input_path), str(media_root)]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe for {kind.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["baseline_mib"] > figures["resident_mib"] + 2:  # the peak did not start at the idle RSS
        raise AssertionError(f"memory probe for {kind.name}: baseline peak masked ({figures})")
    return figures


def _steps(rate: Rate) -> str:
    return ", ".join(f"{step} {seconds * 1000:.1f}" for step, seconds in rate.steps.items())


def run() -> list[dict[str, Any]]:
    """Measure; one row per metric: metric, ours, unit, notes."""
    rows: list[dict[str, Any]] = []
    with scratch_media() as scratch:
        inputs: dict[str, Path] = {}
        for kind in KINDS:
            inputs[kind.name] = scratch / f"input-{kind.name}.{kind.fmt.lower()}"
            inputs[kind.name].write_bytes(kind.make())
        memory_figures = {kind.name: memory(kind, inputs[kind.name], scratch / f"media-{kind.name}") for kind in KINDS}
        config = image_config(scratch / "media")
        single: dict[str, Rate] = {}
        for kind in KINDS:
            source = inputs[kind.name].read_bytes()
            single[kind.name] = rate = throughput(kind, source, config, kind.tasks)
            rows.append(
                _row(
                    f"image: {kind.label} ({len(source) / MIB:.1f} MiB), 1 thread",
                    rate.per_second,
                    "tasks/s",
                    f"{rate.tasks} tasks -> {rate.output}; {rate.cores:.2f} CPU s per s; median ms: {_steps(rate)}",
                )
            )
        jpeg = BY_NAME["jpeg"]
        threaded = throughput(jpeg, inputs[jpeg.name].read_bytes(), config, THREADED_TASKS, threads=2)
        speedup = threaded.per_second / single[jpeg.name].per_second
        rows.append(
            _row(
                f"image: {jpeg.label}, 2 threads",
                threaded.per_second,
                "tasks/s",
                f"{threaded.tasks} tasks; {speedup:.2f}x one thread (2.00x: the GIL never in the way); "
                f"{threaded.cores:.2f} CPU s per s (2.00: both cores busy); median ms: {_steps(threaded)}",
            )
        )
    for kind in KINDS:
        figures = memory_figures[kind.name]
        rows.append(
            _row(
                f"image: peak RSS growth, one {kind.label} task in flight",
                figures["first_mib"],
                "MiB",
                f"ru_maxrss in a fresh process, over its idle warmed-up RSS ({figures['resident_mib']:.1f} MiB); "
                f"after {MEMORY_TASKS} sequential tasks: {figures['after_mib']:.1f} MiB",
            )
        )
    for kind in KINDS:
        rows.append(
            _row(
                f"image: tracemalloc peak, one {kind.label} task",
                memory_figures[kind.name]["traced_mib"],
                "MiB",
                "Python heap allocated during the task (encoded result, base64, codec buffers); "
                "Pillow's pixel buffers are C allocations tracemalloc does not see",
            )
        )
    return rows


def _row(metric: str, ours: float, unit: str, notes: str) -> dict[str, Any]:
    return {"metric": metric, "ours": round(ours, 2), "unit": unit, "notes": notes}


def main(argv: list[str] | None = None) -> None:
    """Print the rows as a table (``--probe`` is the memory probe's own entry point)."""
    parser = argparse.ArgumentParser(prog="python -m bench.image_bench", description=__doc__)
    parser.add_argument("--probe", nargs=3, metavar=("KIND", "INPUT", "MEDIA_ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        name, input_path, media_root = args.probe
        print(json.dumps(probe(BY_NAME[name], Path(input_path), Path(media_root))))
        return
    rows = run()
    print(f"{'metric':58} {'ours':>9} {'unit':8} notes")
    for row in rows:
        print(f"{row['metric']:58} {row['ours']:>9} {row['unit']:8} {row['notes']}")


if __name__ == "__main__":
    main()
