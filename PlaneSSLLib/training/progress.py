"""What a run reports while it trains (rank 0 only): progress bar or log lines, metrics.csv,
TensorBoard scalars and the progress plot ``progress.png``.

- Progress: a tqdm bar with images/s and ETA when stderr is a terminal, otherwise (batch jobs,
  CI, log files) one log line every ``log_every`` steps with the same figures.
- ``metrics.csv``: one row per epoch, rewritten atomically from the run history (which lives in
  the checkpoint), so it always agrees with the last checkpoint after a crash and resume.
- ``progress.png``: train/validation loss per task against epochs (matplotlib, Agg backend),
  written atomically each epoch.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes

__all__ = ["ProgressReporter", "MetricsLog", "format_duration", "write_metrics_csv", "write_progress_plot"]

log = logging.getLogger("planessl.training")

#: Columns of metrics.csv, in order.
METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_lines", "train_location",
    "val_loss", "val_lines", "val_location", "images_per_s", "epoch_seconds", "best",
)


def format_duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03`` style."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressReporter:
    """Step progress with throughput (images/s, global) and ETA; silent on ranks other than 0."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool, mode: str = "auto",
                 log_every: int = 20) -> None:
        self.total = total_steps
        self.step = start_step
        self.log_every = max(1, log_every)
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode if enabled else "none"
        self._bar = None
        self._redirect = None
        self._t0 = time.perf_counter()
        self._steps_timed = 0
        self._images_timed = 0
        self._window: list[tuple[float, int]] = []
        if self.mode == "bar":
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)
            # console log lines go through the bar (files still get them as usual)
            self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
            self._redirect.__enter__()

    def new_epoch(self) -> None:
        """Forget the throughput window (so validation time does not count as slow training)."""
        self._window = [(time.perf_counter(), self._images_timed)]

    def images_per_s(self) -> float:
        if len(self._window) < 2:
            return float("nan")
        (t0, n0), (t1, n1) = self._window[0], self._window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")

    def eta_s(self) -> float:
        if self._steps_timed == 0:
            return float("nan")
        per_step = (time.perf_counter() - self._t0) / self._steps_timed
        return per_step * (self.total - self.step)

    def update(self, images: int, epoch: int, epochs: int, loss: Any) -> None:
        """One optimiser step of ``images`` images (global) is done; ``loss`` (float or tensor) is
        read only when shown, so GPU steps are not synchronised every step."""
        self.step += 1
        self._steps_timed += 1
        self._images_timed += images
        self._window.append((time.perf_counter(), self._images_timed))
        self._window = self._window[-50:]
        show = self.step % self.log_every == 0 or self.step == self.total
        if self.mode == "bar" and self._bar is not None:
            if show or self.step < 3:
                self._bar.set_postfix_str(
                    f"epoch {epoch + 1}/{epochs} loss {float(loss):.4g} {self.images_per_s():.1f} img/s", refresh=False
                )
            self._bar.update(1)
        elif self.mode == "log" and show:
            log.info(
                "step %d/%d epoch %d/%d loss %.4g %.1f img/s ETA %s",
                self.step, self.total, epoch + 1, epochs, float(loss), self.images_per_s(),
                format_duration(self.eta_s()),
            )

    def message(self, text: str) -> None:
        """An INFO log line (through the bar when there is one, so it does not break it)."""
        if self.mode != "none":
            log.info("%s", text)

    def close(self) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def write_metrics_csv(history: list[dict[str, Any]], path: Path,
                      columns: tuple[str, ...] = METRIC_COLUMNS) -> Path:
    """A CSV of ``columns`` from the rows (atomic; a missing or None value is an empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def write_progress_plot(history: list[dict[str, Any]], path: Path, tasks: tuple[str, ...],
                        title: str = "PlaneSSL pretraining") -> Path | None:
    """Loss curves (train and validation) per task against epochs as a PNG (atomic)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = [("loss", "total")] + ([(t, t) for t in tasks] if len(tasks) > 1 else [])
    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=100)
    epochs = [row["epoch"] for row in history]
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for split, style in (("train", "-"), ("val", "--")):
            values = [row.get(f"{split}_{key}") for row in history]
            pts = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None and math.isfinite(v)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="." if len(pts) < 30 else None,
                        label=split)
        best = [row["epoch"] for row in history if row.get("best")]
        if best and key == "loss":
            ax.axvline(best[-1], color="grey", lw=0.8, ls=":", label="best")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        positive = [row.get(f"{s}_{key}") for row in history for s in ("train", "val")]
        if all(v is not None and v > 0 for v in positive):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


class MetricsLog:
    """metrics.csv, progress.png and TensorBoard for one run (every method is a no-op off rank 0)."""

    def __init__(self, out_dir: Path, enabled: bool, tasks: tuple[str, ...], tensorboard: bool = True,
                 plot: bool = True, columns: tuple[str, ...] = METRIC_COLUMNS,
                 title: str = "PlaneSSL pretraining") -> None:
        self.out_dir = out_dir
        self.columns = columns
        self.title = title
        self.enabled = enabled
        self.tasks = tasks
        self.plot = plot
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # pragma: no cover - tensorboard is a train extra
                log.warning("TensorBoard logging off: %s", exc)
            else:
                self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._tb is not None:
            for key, value in values.items():
                if value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def epoch(self, history: list[dict[str, Any]]) -> None:
        """After an epoch: rewrite metrics.csv and the plot, add epoch scalars."""
        if not self.enabled:
            return
        row = history[-1]
        self.scalars(row["step"], {
            f"{split}/{key}": row.get(f"{split}_{key}")
            for split in ("train", "val") for key in ("loss",) + self.tasks
        } | {"lr": row.get("lr"), "throughput/images_per_s": row.get("images_per_s")})
        if self._tb is not None:
            self._tb.flush()
        write_metrics_csv(history, self.out_dir / "metrics.csv", self.columns)
        if self.plot:
            try:
                write_progress_plot(history, self.out_dir / "progress.png", self.tasks, self.title)
            except Exception as exc:  # a plot must never stop training
                log.warning("progress plot not written: %s", exc)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
