"""The training loop: data, model, optimisation, validation, checkpoints and resume.

A run lives in ``cfg.output_dir``::

    config.yaml            the validated config, as run
    metrics.csv            one row per epoch (train loss, throughput, validation metrics)
    checkpoints/last.pt    written every epoch: weights, optimiser, schedule, RNG states
    checkpoints/best.pt    the epoch with the best validation ``train.monitor``

Resuming restores every RNG and draws each epoch's data order and augmentation from ``(seed,
epoch)``: a run stopped after any epoch and resumed ends with the weights of one never stopped.

Under ``torchrun`` the same loop runs data-parallel (see :mod:`unetseg.training.distributed`):
each process trains on its shard of every epoch with its own augmentation stream, gradients
are averaged by DistributedDataParallel, rank 0 alone validates and writes the run, and every
stop decision (time budget, non-finite loss) is taken by all ranks together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from unetseg.config import Config, ConfigError, config_changes, dump_config
from unetseg.data import worker_init
from unetseg.inference.evaluation import evaluate
from unetseg.inference.predictor import Predictor
from unetseg.metrics.region import is_better
from unetseg.models import build_model, count_parameters
from unetseg.models.checkpoint import load_checkpoint, save_checkpoint, training_record
from unetseg.runtime import amp_dtype, autocast, precision_name, rng_state, seed_everything, set_rng_state, set_threads
from unetseg.training.averaging import WeightAverage
from unetseg.training.compile_check import COMPILE_OPTIONS, compile_failure, has_strided_pointwise_conv, trial_payload
from unetseg.training.datasets import decode_datasets, open_datasets
from unetseg.training.distributed import Distributed, rank_seed
from unetseg.training.errors import TrainingError
from unetseg.training.forecast import crop_shape, first_guess, loader_workers
from unetseg.training.logger import MetricsLogger
from unetseg.training.losses import build_loss, deep_supervision_loss
from unetseg.training.optim import BudgetClock, budget_now, build_optimizer, build_scheduler
from unetseg.training.postprocess_choice import choose_for_run
from unetseg.training.probes import LevelProbe
from unetseg.training.progress import RunProgress
from unetseg.training.resume import check_split, restore_optimisation, restore_weights, split_record
from unetseg.training.run_folder import RunFolder

Approve = Callable[[float, torch.device], None]


class Trainer:
    """Train ``cfg`` into ``cfg.output_dir``; ``resume=True`` continues from ``last.pt`` there.

    The expected duration is logged before the first step (:mod:`unetseg.training.forecast`) and
    once the first steps are timed; each time ``approve`` (if given) is called with the seconds
    left and the device: it raises to stop a run that should not go on (a GPU config on a CPU),
    so the decision rests with the caller, not the loop. It is not called under torchrun, where
    a rank stopping alone would leave the others waiting.
    """

    def __init__(self, cfg: Config, resume: bool = False, log=print, approve: Approve | None = None) -> None:
        self.cfg = cfg
        self.resume = resume
        self.log = log
        self.approve = approve
        self.folder = RunFolder(Path(cfg.output_dir), resume, log)
        self.out_dir, self.last_path, self.best_path = self.folder.out_dir, self.folder.last_path, self.folder.best_path

    # ------------------------------------------------------------------ set-up

    def _build_model(self) -> None:
        cfg = self.cfg
        self.device = self.dist.device
        self.amp = amp_dtype(cfg.train.amp, self.device)
        try:
            self.model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels).to(self.device)
        except ValueError as err:  # a model the config cannot build (unknown smp encoder, weights, depth)
            raise ConfigError(f"model: {err}") from None
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = self.dist.wrap(self.model)  # DDP under torchrun; self.model keeps the weights
        if cfg.train.compile:
            self.step_model = self._compiled(self.step_model)
        wanted = LevelProbe.wanted(self.model, cfg.train.level_stats)
        self.probe = LevelProbe(self.model, gradients=cfg.train.level_stats) if wanted else None
        self.steps_per_epoch = max(self.dist.share(len(self.train_ds)) // cfg.train.batch_size, 1)
        self.now = budget_now(cfg.train)  # what max_time_s counts: wall clock or CPU time per thread
        self.clock = BudgetClock(cfg.train.max_time_s, self.now) if cfg.train.max_time_s else None
        self.average = WeightAverage(self.model, cfg.train.ema) if cfg.train.ema else None
        predicting = self.average.module if self.average else self.model
        self.predictor = Predictor.of(
            predicting,
            cfg,
            self.device,
            cfg.inference.model_copy(update={"tta": "none"}),  # validation picks epochs: no TTA (as nnU-Net)
            self.amp,
            cfg.train.channels_last,
        )

    def _compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        """``torch.compile(module)``, unless a compiled step of this model fails in a trial on
        this CPU (see :mod:`unetseg.training.compile_check`): then the module, and one line."""
        if self.device.type == "cpu" and has_strided_pointwise_conv(self.model):
            height, width = crop_shape(self.cfg.augment.crop_size, self.train_ds)
            shape = (self.cfg.train.batch_size, self.cfg.data.channels, height, width)
            why = compile_failure(trial_payload(self.cfg, shape, self.amp))
            if why is not None:
                self.log(
                    f"train.compile: a compiled training step of this model {why} on this CPU "
                    f"(torch {torch.__version__}); training without torch.compile"
                )
                return module
        return torch.compile(module, **COMPILE_OPTIONS)

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "config": dump_config(self.cfg),
            # "model" holds the weights to predict with (the average when there is one), so
            # predict, evaluate and export need not know about averaging; resume reads both.
            "model": self.predictor.model.state_dict(),
            **({"trained_model": self.model.state_dict(), "ema": self.average.counters()} if self.average else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "history": self.history,
            "best": {"value": self.best_value, "epoch": self.best_epoch},
            "rng": rng_state(),  # the same on every rank: all start from one seed and draw alike
            "world_size": self.dist.world,
            "precision": precision_name(self.amp),  # what train.amp became on this machine
            "split": split_record(self.train_ds, self.val_ds),
        }

    def _restore(self) -> int:
        # On the CPU: the RNG states must be CPU tensors, and load_state_dict moves the rest to the model's device.
        self._build_optimisation()
        state = load_checkpoint(self.last_path)
        history, best = training_record(state, self.last_path)  # before anything is restored
        changed = config_changes(state["config"], self.cfg)  # keys added to the schema since are not changes
        check_split(state, split_record(self.train_ds, self.val_ds), self.last_path)
        if state.get("world_size", 1) != self.dist.world:
            changed.append(f"processes {state.get('world_size', 1)} -> {self.dist.world}")
        before, now = state.get("precision", precision_name(self.amp)), precision_name(self.amp)
        if before != now:  # same train.amp, another machine
            changed.append(f"precision {before} -> {now}")
        if changed:
            self.log(
                f"note: resuming with changed settings {', '.join(changed)}; the run is no longer exactly reproducible"
            )
        restore_weights(self.model, state.get("trained_model", state["model"]), changed, self.last_path)
        if self.average is not None:  # a run that had no average starts one from its weights
            self.average.restore(state["model"], state.get("ema", {"updates": 0}))
        parts = {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}
        restore_optimisation(state, parts, changed, self.last_path)
        self.history = list(history)
        self.best_value, self.best_epoch = best["value"], best["epoch"]
        set_rng_state(state["rng"])
        return int(state["epoch"])

    # ------------------------------------------------------------------ loop

    def _loader(self, epoch: int) -> DataLoader:
        base = self.cfg.seed * 1_000_003
        seed = rank_seed(base + epoch, self.dist.rank)  # this rank's augmentation and worker seeds
        self.train_ds.reseed(seed)  # used when loading in this process (num_workers = 0)
        sampler = self.dist.sampler(self.train_ds, base, epoch)  # order drawn from base + epoch, by rank
        train = self.cfg.train
        return DataLoader(
            self.train_ds,
            batch_size=train.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=torch.Generator().manual_seed(seed),
            num_workers=self.workers,
            worker_init_fn=worker_init,
            pin_memory=self.device.type == "cuda",
            drop_last=self.dist.share(len(self.train_ds)) >= train.batch_size,
        )

    def _train_epoch(self, epoch: int, deadline: float | None) -> tuple[float, float, int, bool]:
        """(mean loss, images/s, images seen, stopped by the time budget)."""
        self.step_model.train()
        total, seen, stopped = 0.0, 0, False
        start = time.perf_counter()
        bar = tqdm(
            self._loader(epoch),
            desc=self.progress.epoch_label(epoch + 1),
            leave=False,
            disable=None if self.cfg.train.progress and self.dist.main else True,
        )
        for step, batch in enumerate(bar):
            x = batch["image"].to(self.device, non_blocking=True)
            y = batch["mask"].to(self.device, non_blocking=True)
            weight = batch["weight"].to(self.device, non_blocking=True) if "weight" in batch else None
            if self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp):
                loss = self.loss_fn(self.step_model(x, **self.forward_kwargs), y, weight)
            value = self.dist.mean(loss.detach())  # over the ranks: non-finite anywhere stops all
            if not torch.isfinite(value):
                raise TrainingError(
                    f"loss became {value.item()} at epoch {epoch + 1}, step {step + 1}; stopping. "
                    f"The last good checkpoint is {self.last_path if self.last_path.exists() else '(none yet)'}; "
                    "try a lower train.lr or train.grad_clip"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.train.grad_clip or self.probe is not None:
                self.scaler.unscale_(self.optimizer)  # clip and measure true gradients, not scaled ones
            if self.cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
            if self.probe is not None:
                self.probe.before_step()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.probe is not None:
                self.probe.after_step()
            if self.average is not None:
                self.average.update(self.model)
            if self.cfg.train.scheduler != "plateau":
                self.scheduler.step()
            total += value.item() * x.shape[0]
            seen += x.shape[0]
            bar.set_postfix(loss=f"{total / seen:.4f}")
            if self.progress.step():
                bar.set_description(self.progress.epoch_label(epoch + 1))
                self._announce(self.progress.estimate(), self.progress.seconds_left())
            if deadline is not None and self.dist.any(self.now() >= deadline):
                stopped = True
                break
        elapsed = time.perf_counter() - start
        everyone = self.dist.sum(seen)
        return total / max(seen, 1), everyone / max(elapsed, 1e-9), everyone, stopped

    def _announce(self, estimate: str, seconds_left: float) -> None:
        """Say how long the run will take, and let ``approve`` stop it before it goes on."""
        with tqdm.external_write_mode():
            self.log(estimate)
            if self.approve is not None and not self.dist.enabled:
                self.approve(seconds_left, self.device)

    def validate(self) -> dict[str, float]:
        if self.val_ds is None:
            return {}
        state = rng_state()  # validation must not move the training RNGs (ranks that skip it stay in step)
        metrics, _ = evaluate(self.predictor, self.val_ds, self.cfg.eval.regions)
        set_rng_state(state)
        return metrics

    def _save(self, path: Path, epoch: int) -> None:
        if not self.dist.main:
            return
        try:
            save_checkpoint(path, self._state(epoch))
        except OSError as err:  # disk full, folder gone or read-only: the previous checkpoint is intact
            raise TrainingError(f"cannot write checkpoint {path}: {err.strerror or err}") from None

    def fit(self) -> dict[str, Any]:
        """Train to the end (or the time budget); returns a summary of the run."""
        self.dist = Distributed(self.cfg.train.device)
        if not self.dist.main:
            self.log = lambda *_: None
        try:
            return self._fit()
        finally:
            self.folder.release()
            self.dist.close()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        start_epoch, spent = self._start()
        logger = MetricsLogger(self.out_dir, log=self.log) if self.dist.main else None
        clock = time.perf_counter()
        deadline = self.now() + cfg.train.max_time_s - spent if cfg.train.max_time_s else None
        self.progress = RunProgress(
            cfg.train.epochs, start_epoch, self.steps_per_epoch, cfg.train.max_time_s, spent, clock=self.now
        )
        if self.clock is not None:
            self.clock.start(spent)
        try:
            for epoch in range(start_epoch, cfg.train.epochs):
                loss, speed, seen, stopped = self._train_epoch(epoch, deadline)
                row = self._epoch_row(epoch, loss, speed, seen, stopped or epoch + 1 == cfg.train.epochs, logger)
                row["elapsed_s"] = round(spent + time.perf_counter() - clock, 2)
                self._record(row, logger)
                if stopped:
                    self.log(f"time budget of {cfg.train.max_time_s:.0f} s reached after epoch {epoch + 1}")
                    break
        finally:
            if logger is not None:
                logger.close()
        if self.val_ds is None and self.history:  # no validation: the last epoch is the best we know
            self._save(self.best_path, self.history[-1]["epoch"])
        if cfg.train.postprocess == "choose" and self.val_ds is not None and self.dist.main and self.best_path.exists():
            as_predict = replace(self.predictor, cfg=cfg.inference)  # with the TTA predict uses
            choose_for_run(self.best_path, as_predict, self.val_ds, self.log)
        self.dist.barrier()  # the others wait for rank 0's last writes
        return {
            "output_dir": str(self.out_dir),
            "best_checkpoint": str(self.best_path),
            "best_epoch": self.best_epoch,
            "best_" + cfg.train.monitor: self.best_value,
            "history": self.history,
        }

    def _build_optimisation(self) -> None:
        """Optimiser, schedule and scaler; after the first announcement, because torch's
        optimisers import torch._dynamo on construction (2 s idle, more on a busy machine)."""
        self.optimizer = build_optimizer(self.model, self.cfg.train)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.train, self.steps_per_epoch, self.clock)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def _start(self) -> tuple[int, float]:
        """Everything before the first step, announced in one line and a first guess of its time
        before the slow imports of decoding and loss (albumentations, MONAI): (first epoch, spent s)."""
        cfg = self.cfg
        self.folder.prepare(self.dist)
        set_threads(cfg.train.threads)
        seed_everything(cfg.seed, cfg.train.deterministic)
        self.train_ds, self.val_ds = open_datasets(cfg)  # decoded after the first guess
        self._build_model()
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch = 0
        start_epoch = self._restore() if self.resume else 0  # a resumed run's first line needs its epoch
        spent = float(self.history[-1]["elapsed_s"]) if self.history else 0.0
        self.log(
            f"training {count_parameters(self.model):,} parameters on {self.device}{self._precision_note()} "
            f"({len(self.train_ds.samples)} train / {len(self.val_ds.samples) if self.val_ds else 0} val pairs), "
            f"epochs {start_epoch + 1}..{cfg.train.epochs}"
            + (f" or {cfg.train.max_time_s:g} s, whichever ends first" if cfg.train.max_time_s else "")
            + f" -> {self.out_dir}"
            + (f", {self.dist.world} processes" if self.dist.enabled else "")
        )
        self.workers = loader_workers(cfg.train.num_workers, self.log)
        guess = first_guess(self.model, cfg, self.train_ds, self.steps_per_epoch, start_epoch, spent, self.amp)
        if guess is not None:
            self._announce(guess.line(), guess.seconds)
        decode_datasets(cfg, self.train_ds, self.val_ds, self.log)
        self.folder.write_config(cfg, self.dist)
        if not self.resume:
            self._build_optimisation()
        self.loss_fn, self.forward_kwargs = build_loss(cfg.train.loss, cfg.data.out_channels), {}  # imports MONAI
        if getattr(cfg.model, "deep_supervision", 0):
            self.loss_fn = deep_supervision_loss(self.loss_fn, 1 + cfg.model.deep_supervision)
            self.forward_kwargs = {"deep_supervision": True}
        return start_epoch, spent

    def _precision_note(self) -> str:
        """Under which precision the steps run, and why not the one asked for where they differ."""
        requested = self.cfg.train.amp
        if self.amp is not None:
            return f" under {precision_name(self.amp)} autocast"
        if self.device.type == "cpu" and requested in ("bf16", "fp16"):
            why = "this CPU has no bf16 instructions" if requested == "bf16" else "fp16 is not used on a CPU"
            return f" in fp32 (train.amp: {requested}, but {why})"
        return ""

    def _epoch_row(
        self, epoch: int, loss: float, speed: float, seen: int, last: bool, logger: MetricsLogger | None
    ) -> dict[str, Any]:
        """The history row of an epoch: training figures, probe statistics and, on validation
        epochs, the validation metrics (which also step a plateau schedule and track the best)."""
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": round(loss, 6),
            "train_img_per_s": round(speed, 3),
            "train_images": seen,
        }
        if self.probe is not None:
            row.update({k: round(v, 6) for k, v in self.probe.epoch_stats().items()})
        if (epoch + 1) % self.cfg.train.val_every != 0 and not last:
            return row
        metrics = self.dist.broadcast(self.validate() if self.dist.main else None)
        if logger is not None:
            logger.write_images(epoch + 1, self.predictor, self.val_ds)
        row.update({f"val_{k}": round(v, 6) for k, v in metrics.items()})
        value = metrics.get(self.cfg.train.monitor)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and value is not None:
            self.scheduler.step(value)
        if value is not None and is_better(self.cfg.train.monitor, value, self.best_value):
            self.best_value, self.best_epoch = value, epoch + 1
        return row

    def _record(self, row: dict[str, Any], logger: MetricsLogger | None) -> None:
        """Append the row, then write the checkpoints and metrics.csv (best.pt holds its own row)."""
        epoch = row["epoch"]
        self.history.append(row)
        if self.best_epoch == epoch:
            self._save(self.best_path, epoch)
        self._save(self.last_path, epoch)
        if logger is not None:
            logger.write(self.history)
        self.log(self.progress.describe(row))
