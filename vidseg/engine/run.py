"""Train and eval-only jobs: config -> model bundle, data, optimizer, hooks -> trainer (on every rank).

``run_train(cfg, opts)`` / ``run_eval(cfg, opts)`` launch ``train_worker`` / ``eval_worker`` in one process,
``opts.num_procs`` local processes, or inside an existing torchrun group. Data comes through a
:class:`DataSource` (by default ``vidseg.data``), which tests replace with small stand-ins.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidseg.checkpoints import load_weights
from vidseg.config import CfgNode, config_to_dict
from vidseg.engine.batch_sampler import ResumableBatchSampler
from vidseg.engine.evaluate import evaluate_dataset
from vidseg.engine.hooks import CheckpointHook, EvalHook, MetricsHook
from vidseg.engine.launch import launch
from vidseg.engine.optim import (
    GroupSpec,
    build_optimizer,
    build_scheduler,
    freeze_parameters,
    param_groups_by_substrings,
)
from vidseg.engine.run_setup import (
    absolute_paths,
    decide_resume,
    per_rank_batch_size,
    resolve_device,
    seed_all,
    set_deterministic,
    setup_logging,
    write_config,
)
from vidseg.engine.trainer import HookBase, NonFiniteLossError, Trainer
from vidseg.engine.training_state import LAST, load_training_state
from vidseg.engine.writers import CurvesWriter, JSONLinesWriter, TensorBoardWriter, VisdomWriter, read_records
from vidseg.models import build_model, config_from_dict
from vidseg.models.bundle import LazyMetadata
from vidseg.utils import dist
from vidseg.utils.atomic import remove_stale_temporaries
from vidseg.utils.threads import configure_threads

__all__ = [
    "RunOptions",
    "DataSource",
    "run_train",
    "run_eval",
    "train_worker",
    "eval_worker",
    "build_param_groups",
]

logger = logging.getLogger("vidseg")


@dataclass
class RunOptions:
    """Command-line options of a train / eval job (the config holds everything else)."""

    resume: bool = False
    overwrite: bool = False
    num_procs: int = 1
    progress: bool = True
    extra_hooks: tuple = ()  # HookBase instances (or zero-arg factories) appended on every rank


class DataSource:
    """Where the engine gets data. The default reads ``vidseg.data``; override the methods in tests."""

    def _data(self) -> Any:
        try:
            return importlib.import_module("vidseg.data")
        except ImportError as e:  # pragma: no cover - the package always exists
            raise RuntimeError(f"vidseg.data is unavailable: {e}") from e

    def _need(self, name: str) -> Any:
        fn = getattr(self._data(), name, None)
        if fn is None:
            raise RuntimeError(f"vidseg.data.{name} is not available yet (the data pipeline provides it)")
        return fn

    def train(self, cfg: CfgNode) -> tuple[Any, Any]:
        """``(map-style train dataset with set_epoch, collate_fn -> ClipBatch)``."""
        return self._need("build_train_dataset")(cfg), self._need("build_collate_fn")(cfg)

    def test(self, cfg: CfgNode, name: str) -> tuple[Any, Any]:
        """``(test dataset of whole videos, collate_fn or None when items go to inference as they are)``."""
        return self._need("build_test_dataset")(cfg, name), None

    def metadata(self, cfg: CfgNode, name: str) -> Any:
        """An object with ``num_classes``, ``label_to_category_id``, ``json_file`` and ``has_annotations``."""
        return self._need("get_dataset_metadata")(name, cfg)

    def evaluator(self, cfg: CfgNode, name: str, out_dir: Path) -> Any | None:
        """The evaluator of ``name`` writing into ``out_dir`` (built on every rank): the metric its metadata
        names (``evaluator_type``: YouTube-VIS, OVIS, YouTube-VIS 2022 or COCO), see
        :func:`vidseg.evaluation.build.build_evaluator`. Without ground truth it only writes the results
        files."""
        try:
            from vidseg.evaluation.build import build_evaluator
        except ImportError as e:
            warnings.warn(
                f"vidseg.evaluation unavailable ({e}): results are written, not scored", stacklevel=2
            )
            return None
        return build_evaluator(
            self.metadata(cfg, name),
            out_dir,
            # the metric runs in this process: forking a trainer that holds a CUDA or NCCL context is unsafe
            workers=1,
            progress=False,
            mask_on=getattr(cfg.MODEL, "MASK_ON", True),
            records=lambda: self._need("load_dataset")(name, cfg)[0],
        )


def build_param_groups(cfg: CfgNode, model: torch.nn.Module, bundle_fn: Any = None) -> list[dict]:
    """The method's ``param_groups(model)`` when it has one, else ``SOLVER.PARAM_GROUP_*`` name substrings."""
    if bundle_fn is not None:
        return bundle_fn(model)
    s = cfg.SOLVER
    n = len(s.PARAM_GROUP_NAMES)
    if len(s.PARAM_GROUP_SUBSTRINGS) != n or len(s.PARAM_GROUP_LR_MULTS) != n:
        raise ValueError(
            "SOLVER.PARAM_GROUP_NAMES, PARAM_GROUP_SUBSTRINGS and PARAM_GROUP_LR_MULTS must have one length, "
            f"got {n}, {len(s.PARAM_GROUP_SUBSTRINGS)}, {len(s.PARAM_GROUP_LR_MULTS)}"
        )
    wds = list(s.PARAM_GROUP_WEIGHT_DECAYS) or [-1.0] * n
    specs = [
        GroupSpec(name, list(subs), float(mult), float(wd))
        for name, subs, mult, wd in zip(
            s.PARAM_GROUP_NAMES, s.PARAM_GROUP_SUBSTRINGS, s.PARAM_GROUP_LR_MULTS, wds
        )
    ]
    return param_groups_by_substrings(model, s.BASE_LR, s.WEIGHT_DECAY, specs)


def _model_metadata(cfg: CfgNode, data: DataSource) -> LazyMetadata | None:
    """The metadata of the first train (else test) dataset through ``data``, read only if the builder asks."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    return LazyMetadata(lambda: data.metadata(cfg, names[0])) if names else None


def _amp_dtype(cfg: CfgNode, device: torch.device) -> torch.dtype | None:
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    if cfg.SOLVER.AMP.DTYPE not in dtypes:
        raise ValueError(f"SOLVER.AMP.DTYPE: unknown {cfg.SOLVER.AMP.DTYPE!r}; known: {sorted(dtypes)}")
    if device.type == "cpu":
        # CPU autocast is real (bf16 is fast on CPUs with AMX/AVX512-BF16, slow elsewhere); it is also how the
        # AMP code path is exercised by the CPU test suite.
        logger.info("SOLVER.AMP on CPU: autocast to %s on the CPU", cfg.SOLVER.AMP.DTYPE)
    return dtypes[cfg.SOLVER.AMP.DTYPE]


def _make_eval_fn(cfg: CfgNode, bundle: Any, data: DataSource, model: torch.nn.Module, progress: bool = True):
    names = list(cfg.DATASETS.TEST)
    root = Path(cfg.OUTPUT_DIR) / cfg.TEST.SAVE_PATH
    sets = {n: data.test(cfg, n) for n in names}

    def eval_fn(tag: str, epoch: int, iteration: int) -> dict:
        metrics: dict[str, float] = {}
        for n, (ds, collate) in sets.items():
            out = root / tag if len(names) == 1 else root / tag / n
            meta = data.metadata(cfg, n)
            evaluator = data.evaluator(cfg, n, out)
            desc = f"eval {tag}".strip()
            m = evaluate_dataset(
                model,
                bundle.inference,
                ds,
                out,
                meta.label_to_category_id,
                evaluator,
                collate,
                desc,
                progress,
            )
            metrics.update(m if len(names) == 1 else {f"{n}/{k}": v for k, v in m.items()})
        return metrics

    return eval_fn


def _writers(cfg: CfgNode, resume_iter: int | None) -> list[Any]:
    out = Path(cfg.OUTPUT_DIR)
    name = out.resolve().name  # the run's name: the Visdom env and the title of curves.png
    jsonl = JSONLinesWriter(out / "metrics.jsonl", resume_iter=resume_iter)
    history = read_records(jsonl.path) if resume_iter is not None else []  # truncated at resume_iter
    writers: list[Any] = [jsonl, CurvesWriter(out / "curves.png", name, history)]
    if cfg.VISDOM_ON:
        v = VisdomWriter(cfg.VISDOM_SERVER, cfg.VISDOM_PORT, name, history if cfg.RESUME_VIS else None)
        if v.enabled:  # the server may be down: the writer retries at each write
            writers.append(v)
    if cfg.TENSORBOARD_ON:
        writers.append(TensorBoardWriter(out / "tensorboard", resume_iter=resume_iter))
    return writers


def _shift(cfg: CfgNode) -> bool:
    """``MODEL.SHIFT_CLASS_NEURON`` (a Deformable DETR key; other methods' configs may not have it)."""
    return bool(cfg.MODEL.get("SHIFT_CLASS_NEURON", False))


def _record_label_names(cfg: CfgNode, data: DataSource) -> None:
    """``MODEL.CLASS_NAMES`` / ``MODEL.CATEGORY_IDS`` from the training set's metadata (when it has class
    names and the config does not set them), so that the saved config.yaml alone names the labels."""
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    if cfg.MODEL.CLASS_NAMES or not names:
        return
    try:
        meta = data.metadata(cfg, names[0])
    except Exception:  # noqa: BLE001 - the data pipeline reports a bad dataset itself, with its file
        return
    classes = getattr(meta, "classes", None)
    if classes:
        cfg.MODEL.CLASS_NAMES = [str(c) for c in classes]
        cfg.MODEL.CATEGORY_IDS = [int(c) for c in getattr(meta, "label_to_category_id", None) or []]


def train_worker(cfg_dict: dict, opts: RunOptions, data: DataSource | None = None) -> int:
    """Build and run the trainer on this rank; 0 (finished or stopped by a signal) or 1 (non-finite loss)."""
    cfg = config_from_dict(cfg_dict)
    data = data or DataSource()
    absolute_paths(cfg)  # config.yaml (and the checkpoints' config) must work from any folder
    _record_label_names(cfg, data)
    cfg.freeze()
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(cfg.OUTPUT_DIR)
    # Rank 0 decides (resume or not) and tells the others, so a shared folder gives one answer.
    resume = dist.all_gather_object(decide_resume(cfg, opts.resume, opts.overwrite) if rank == 0 else None)[0]
    if cfg.MODEL.WEIGHTS and not resume and not Path(cfg.MODEL.WEIGHTS).is_file():  # before the run folder
        raise ValueError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: file not found (the weights to start from)")
    stale: list[Path] = []
    if rank == 0:
        stale = remove_stale_temporaries(out)  # left by a kill during a checkpoint write of this folder
        write_config(cfg)
    dist.barrier()
    setup_logging(out)
    if rank == 0 and stale:
        logger.info(
            "removed %d temporary files left by an interrupted checkpoint write: %s",
            len(stale),
            ", ".join(p.name for p in stale),
        )
    set_deterministic(cfg.DETERMINISTIC)
    seed_all(cfg.SEED + rank)
    device = resolve_device(cfg.MODEL.DEVICE)
    workers = cfg.DATALOADER.NUM_WORKERS
    threads = configure_threads(
        workers=workers, cfg_threads=cfg.MODEL.CPU_THREADS, cpu_run=device.type == "cpu"
    )
    workers = workers if threads.workers is None else threads.workers
    logger.info("world size %d, device %s, output %s", world, device, out.resolve())

    bundle = build_model(cfg, _model_metadata(cfg, data))
    model = bundle.model
    if cfg.MODEL.WEIGHTS and not resume:
        logger.info("MODEL.WEIGHTS: %s", _load_model_weights(model, cfg, evaluating=False))
    frozen = freeze_parameters(model, cfg.SOLVER.FROZEN_PARAMS)
    if frozen:
        logger.info("frozen %d parameters (SOLVER.FROZEN_PARAMS)", len(frozen))
    optimizer = build_optimizer(
        build_param_groups(cfg, model, bundle.param_groups), cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BETAS
    )
    s = cfg.SOLVER
    scheduler = build_scheduler(optimizer, s.SCHEDULE, s.STEPS, s.GAMMA, s.WARMUP_ITERS, s.WARMUP_FACTOR)
    dataset, collate = data.train(cfg)
    batch = per_rank_batch_size(s.IMS_PER_BATCH, s.BATCH_SIZE, world)
    if len(dataset) < batch * world:  # a setting to change: one line, not the sampler's traceback
        key = "SOLVER.IMS_PER_BATCH" if s.IMS_PER_BATCH > 0 else "SOLVER.BATCH_SIZE"
        raise ValueError(
            f"DATASETS.TRAIN has {len(dataset)} clips, fewer than one global batch of {batch * world} "
            f"({key} {s.IMS_PER_BATCH if s.IMS_PER_BATCH > 0 else s.BATCH_SIZE}): lower it or add videos"
        )
    sampler = ResumableBatchSampler(len(dataset), batch, world, rank, seed=cfg.SEED)
    trainer = Trainer(
        model,
        bundle.criterion,
        optimizer,
        scheduler,
        dataset,
        collate,
        sampler,
        schedule=s.SCHEDULE,
        max_epochs=s.EPOCHS,
        max_iter=s.MAX_ITER,
        device=device,
        grad_clip=s.GRAD_CLIP_MAX_NORM,
        grad_clip_type=s.GRAD_CLIP_TYPE,
        amp_dtype=_amp_dtype(cfg, device),
        num_workers=workers,
        seed=cfg.SEED,
        find_unused_parameters=s.FIND_UNUSED_PARAMETERS,
    )
    if resume:
        ckpt = load_training_state(out / LAST)
        trainer.load_state_dict(ckpt)
        logger.info("resumed from %s at epoch %d, iteration %d", out / LAST, trainer.epoch, trainer.iter)
    if rank == 0:
        trainer.writers = _writers(cfg, trainer.iter if resume else None)
    eval_hook = None
    if cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
        eval_fn = _make_eval_fn(cfg, bundle, data, trainer.model, opts.progress)
        eval_hook = EvalHook(eval_fn, cfg.TEST.EVAL_PERIOD, cfg.TEST.START_EVAL_EPOCH, cfg.TEST.BEST_METRIC)
    elif cfg.TEST.EVAL_PERIOD > 0:
        logger.info("DATASETS.TEST is empty: no evaluation during training")
    hooks: list[HookBase] = [MetricsHook(cfg.VISDOM_AND_LOG_INTERVAL, progress=opts.progress)]
    if eval_hook is not None:
        hooks.append(eval_hook)
    hooks.append(
        CheckpointHook(
            str(out),
            s.CHECKPOINT_PERIOD,
            config_to_dict(cfg),
            eval_hook,
            every_iters=s.CHECKPOINT_ITERS,
            every_minutes=s.CHECKPOINT_MINUTES,
        )
    )
    hooks.extend(h() if callable(h) and not isinstance(h, HookBase) else h for h in opts.extra_hooks)
    trainer.register_hooks(hooks)
    try:
        reason = trainer.train()
    except NonFiniteLossError as e:
        logger.error("%s", e)
        return 1
    finally:
        for w in trainer.writers:
            w.close()
    if reason:
        logger.info(
            "stopped by %s at epoch %d, iteration %d; resume with --resume",
            reason,
            trainer.epoch,
            trainer.iter,
        )
    else:
        logger.info("training done: %d iterations; checkpoints in %s", trainer.iter, out.resolve())
    return 0


def eval_worker(cfg_dict: dict, opts: RunOptions, data: DataSource | None = None) -> int:
    """``--eval-only``: load ``MODEL.WEIGHTS``, evaluate every ``DATASETS.TEST`` set into
    ``OUTPUT_DIR/TEST.SAVE_PATH`` (``/<name>`` when several); metrics go to ``metrics.json`` there."""
    cfg = config_from_dict(cfg_dict)
    cfg.freeze()
    data = data or DataSource()
    out = Path(cfg.OUTPUT_DIR)
    setup_logging(out)
    configure_threads(cfg_threads=cfg.MODEL.CPU_THREADS)  # inference reads in this process: no workers
    seed_all(cfg.SEED + dist.get_rank())
    device = resolve_device(cfg.MODEL.DEVICE)
    if not cfg.DATASETS.TEST:
        raise ValueError("eval: DATASETS.TEST is empty; name the dataset(s) to evaluate")
    bundle = build_model(cfg, _model_metadata(cfg, data))
    if cfg.MODEL.WEIGHTS:
        logger.info("MODEL.WEIGHTS: %s", _load_model_weights(bundle.model, cfg, evaluating=True))
    else:  # one log line (a Python warning would print this file's source line under it)
        logger.warning("eval: MODEL.WEIGHTS is empty, evaluating a randomly initialised model")
    model = bundle.model.to(device)
    eval_fn = _make_eval_fn(cfg, bundle, data, model, opts.progress)
    metrics = eval_fn("", 0, 0)
    if dist.is_main_process():
        root = out / cfg.TEST.SAVE_PATH
        root.mkdir(parents=True, exist_ok=True)
        (root / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
        logger.info("results in %s; metrics: %s", root.resolve(), metrics or "none (no ground truth)")
    return 0


def _load_model_weights(model: torch.nn.Module, cfg: CfgNode, evaluating: bool) -> str:
    """Load ``MODEL.WEIGHTS`` into ``model``; the report's line. A file none of whose tensors fit the model
    (another method's checkpoint) is an error; when ``evaluating`` so are tensors of another shape (the
    scores would be those of a partly random model; training starts from such files on purpose)."""
    path = cfg.MODEL.WEIGHTS
    report = load_weights(model, path, shift_class_neuron=_shift(cfg))
    arch = cfg.MODEL.META_ARCHITECTURE
    if not report.mapped and model.state_dict():
        raise ValueError(
            f"MODEL.WEIGHTS {path}: none of its tensors fit the {arch} model (format "
            f"{report.converted_from}, {len(report.left_out)} left out): a checkpoint of another method "
            "or config?"
        )
    if evaluating and report.mismatched:
        # load_weights notes each one as "KEY: checkpoint (shape) vs model (shape)"
        shapes = [n for n in report.notes if n.split(":")[0] in report.mismatched]
        raise ValueError(
            f"MODEL.WEIGHTS {path}: {len(report.mismatched)} tensor(s) of another shape than in the {arch} "
            f"model (is it the checkpoint of this config?): {'; '.join(shapes[:3])}"
        )
    return str(report)


def _exit_code(rc: Any) -> int:
    return int(rc or 0)


def run_train(cfg: CfgNode, opts: RunOptions, data: DataSource | None = None) -> int:
    """Launch training on ``opts.num_procs`` processes (or the torchrun group). Returns the exit code."""
    try:
        return _exit_code(launch(_train_entry, opts.num_procs, config_to_dict(cfg), opts, data))
    except Exception as e:  # a spawned rank failed: its traceback was printed by that rank
        if type(e).__name__ in ("ProcessExitedException", "ProcessRaisedException"):
            logger.error("a training process failed: %s", str(e).splitlines()[0] if str(e) else e)
            return 1
        raise


def run_eval(cfg: CfgNode, opts: RunOptions, data: DataSource | None = None) -> int:
    return _exit_code(launch(_eval_entry, opts.num_procs, config_to_dict(cfg), opts, data))


def _train_entry(cfg_dict: dict, opts: RunOptions, data: DataSource | None) -> int:
    return train_worker(cfg_dict, opts, data)


def _eval_entry(cfg_dict: dict, opts: RunOptions, data: DataSource | None) -> int:
    return eval_worker(cfg_dict, opts, data)
