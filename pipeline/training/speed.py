"""`precision: auto` and `channels_last: auto`: the fastest setting, measured on the machine at hand.

Which setting trains fastest depends on the machine and the model (docs/configuration.md gives the
figures measured), so `auto` is decided by
timing a few training steps of a throw-away model with each candidate setting (the pipeline's own
TrainStep, on random batches of the run's shape) and keeping the fastest one whose losses stayed
finite. Only the fields set to `auto` vary; a field given a value keeps it.

The choice is cached in a JSON file keyed by the machine (CPU model and flags, GPU, torch version and
threads) and the run's shape (model, channels, outputs, image size, batch size), so a second run on
the same machine reads it instead of measuring, and a resumed run trains with the settings it started
with. `fit_fold` keeps the cache beside the run's checkpoints (`checkpoints/speed.json` for the train
stage's default `--checkpoints`) and, for runs without checkpoints (tuning, benchmarks), in
DEFAULT_CACHE, the same file when run from the project root as DVC runs stages: a second `dvc repro`
on the same machine measures nothing. The folder is outside DVC's outputs, which DVC deletes before
re-running a stage. Delete the file to measure again (after a BIOS or driver change, say).
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pipeline.config import AUTO, TrainConfig, training_side
from pipeline.files import read_json, write_json
from pipeline.machine import cpu_description
from pipeline.training.augment import Normalizer
from pipeline.training.models import model_on
from pipeline.training.step import TrainStep, time_steps

log = logging.getLogger(__name__)
CACHE_NAME = "speed.json"
DEFAULT_CACHE = Path("checkpoints") / CACHE_NAME
CACHE_FORMAT = 1  # bump when an entry's layout changes; older files are then measured again
# fp16 is no candidate: on a CPU it does not run, and GPUs take bf16 (see resolve_speed_settings).
PRECISION_CANDIDATES = ("fp32", "bf16")
CHANNELS_LAST_CANDIDATES = (False, True)
# Untimed steps first: the first ones pay for memory allocation and the kernels' selection, which
# differ between the candidates. Then timed steps, few enough that four candidates cost seconds
# where an epoch costs minutes.
WARMUP_STEPS = 2
TIMED_STEPS = 5
# bf16 must beat fp32 by more than this to be chosen: within it the two are as fast as timing can
# tell, and fp32 is the more precise.
BF16_MARGIN = 0.05
UNIFORM_PIXELS = (0.5, 12**-0.5)  # mean and standard deviation of uniform random pixels, scaled to [0, 1]


@dataclass(frozen=True)
class Probe:
    images_per_s: float
    stable: bool  # every loss finite


def measure(config: TrainConfig, in_chans: int, num_outputs: int, image_size: int, device: torch.device) -> Probe:
    """Training speed of a throw-away model with `config`'s settings on random uint8 batches of the run's
    shape, timed in a child process: some kernels crash the process outright (PyTorch 2.14's CPU backward
    of a stride-2 1×1 convolution in channels-last at 8→16 channels and 48 px does), and a candidate
    that crashes must cost the probe, not the run. A crashed candidate is unstable."""
    spawn = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools have started
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
        try:
            return child.submit(
                probe_speed, config, in_chans, num_outputs, image_size, device, torch.get_num_threads()
            ).result()
        except BrokenProcessPool:
            log.warning(
                "%s: the speed probe of %s crashed its process; that setting is not used", config.model, _name(config)
            )
            return Probe(0.0, stable=False)


def probe_speed(
    config: TrainConfig, in_chans: int, num_outputs: int, image_size: int, device: torch.device, threads: int
) -> Probe:
    """Training speed of a throw-away model with `config`'s settings on random uint8 batches of the run's shape."""
    torch.set_num_threads(threads)  # the run's thread count, which a spawned process does not inherit

    model = model_on(config, in_chans, num_outputs, device)
    model.train()
    normalize = Normalizer(*UNIFORM_PIXELS, config.input_size, device, config.channels_last)
    step = TrainStep(model, config, normalize, num_outputs, steps_per_epoch=WARMUP_STEPS + TIMED_STEPS)
    channels = () if in_chans == 1 else (in_chans,)  # the prepared images' layout: N×H×W or N×H×W×C
    images = torch.randint(0, 256, (config.batch_size, image_size, image_size, *channels), dtype=torch.uint8)
    labels = torch.randint(0, num_outputs, (config.batch_size,))
    seconds, finite = time_steps(step, itertools.repeat((images, labels)), WARMUP_STEPS, TIMED_STEPS)
    return Probe(config.batch_size / seconds, finite)


def resolve_speed_settings(
    config: TrainConfig,
    in_chans: int,
    num_outputs: int,
    image_size: int,
    device: torch.device,
    cache_path: str | Path = DEFAULT_CACHE,
) -> TrainConfig:
    """`config` with concrete `precision` and `channels_last`: the `auto` ones cached or measured (see the module)."""
    if config.precision == AUTO and device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        # Not measured: GPUs with native bf16 (Ampere on) run it on tensor cores several times faster than
        # fp32, and bf16 keeps fp32's range, so it trains without loss scaling.
        config = replace(config, precision="bf16")
        log.info("%s: precision bf16 (a GPU with native bf16: not measured)", config.model)
    if AUTO not in (config.precision, config.channels_last):
        return config
    candidates = [
        replace(config, precision=precision, channels_last=channels_last)
        for precision in (PRECISION_CANDIDATES if config.precision == AUTO else (config.precision,))
        for channels_last in (CHANNELS_LAST_CANDIDATES if config.channels_last == AUTO else (config.channels_last,))
    ]
    cache_path = Path(cache_path)
    key = _cache_key(config, in_chans, num_outputs, image_size, device)
    entries = _read_cache(cache_path)
    chosen = _cached_choice(entries.get(key), candidates)
    if chosen is not None:
        where = f"measured before: {_speeds(entries[key]['measured'])}; read from {cache_path}"
    else:
        probes = {_name(c): measure(c, in_chans, num_outputs, image_size, device) for c in candidates}
        stable = [c for c in candidates if probes[_name(c)].stable]
        measured = {name: probe.images_per_s if probe.stable else None for name, probe in probes.items()}
        if not stable:
            log.warning(
                "%s: no setting trained with finite losses in the speed probe (%s); training with %s, not cached",
                config.model,
                _speeds(measured),
                _name(candidates[0]),
            )
            return candidates[0]
        # A bf16 candidate's speed counts BF16_MARGIN less: fp32 wins unless bf16 is clearly faster.
        chosen = max(
            stable, key=lambda c: probes[_name(c)].images_per_s / (1 + BF16_MARGIN if c.precision == "bf16" else 1)
        )
        entries[key] = {"precision": chosen.precision, "channels_last": chosen.channels_last, "measured": measured}
        # Written whole, atomically: two runs measuring at once cost a measurement, never a torn file.
        write_json({"format": CACHE_FORMAT, "entries": entries}, cache_path)
        where = f"measured: {_speeds(measured)}; cached in {cache_path}"
    log.info(
        "%s: precision %s, channels-last %s (%s)",
        config.model,
        chosen.precision,
        "yes" if chosen.channels_last else "no",
        where,
    )
    return chosen


def _cached_choice(entry: object, candidates: list[TrainConfig]) -> TrainConfig | None:
    """The candidate a well-formed cache entry names, else None."""
    if not (isinstance(entry, dict) and isinstance(entry.get("measured"), dict)):
        return None
    return next(
        (
            c
            for c in candidates
            if (c.precision, c.channels_last) == (entry.get("precision"), entry.get("channels_last"))
        ),
        None,
    )


def _name(config: TrainConfig) -> str:
    return config.precision + ("/cl" if config.channels_last else "")


def _speeds(measured: dict[str, float | None]) -> str:
    words = [f"{name} {'unstable' if speed is None else f'{speed:.0f}'}" for name, speed in measured.items()]
    return ", ".join(words) + " img/s"


def _cache_key(config: TrainConfig, in_chans: int, num_outputs: int, image_size: int, device: torch.device) -> str:
    """What the fastest setting depends on: the machine, and the shape and fixed settings of the run."""
    return json.dumps(
        {
            "cpu": cpu_description(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "model": config.model,
            "in_chans": in_chans,
            "outputs": num_outputs,
            "image_size": training_side(config, image_size),
            "batch_size": config.batch_size,
            "precision": config.precision,
            "channels_last": config.channels_last,
        },
        sort_keys=True,
    )


def _read_cache(path: Path) -> dict:
    """The cached entries; none (with a warning) when the file cannot be read or is no speed cache of this format."""
    if not path.exists():
        return {}
    try:
        saved = read_json(path)
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not text
        log.warning("%s cannot be read (%s); measuring again and replacing it", path, error)
        return {}
    if not (isinstance(saved, dict) and saved.get("format") == CACHE_FORMAT and isinstance(saved.get("entries"), dict)):
        log.warning(
            "%s is not a speed cache of this pipeline's format %d; measuring again and replacing it", path, CACHE_FORMAT
        )
        return {}
    return saved["entries"]
