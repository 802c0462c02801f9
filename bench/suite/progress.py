"""A suite's progress on the console: one bar over its work, a line per finished unit."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm


class Progress:
    """One bar over the suite's work (tuning trials and final trainings: epochs, or seconds of
    budgeted runs), plus a log line per finished unit; ``quiet`` keeps the lines and drops the
    bar."""

    def __init__(
        self,
        total: int,
        done: int,
        quiet: bool,
        unit: str = "epoch",
        recount: Callable[[], int] | None = None,
    ):
        self.bar = tqdm(total=total, initial=done, unit=unit, desc="suite", disable=quiet)
        self.quiet, self.recount = quiet, recount

    def add(self, work: int) -> None:
        """Work done, or work a unit did not need (a pruned trial)."""
        self.bar.update(work)

    def run_finished(self) -> None:
        """Catch up with the work other workers finished (``recount``: read from the storage),
        so the bar and its ETA cover the whole suite, not this process's share."""
        if self.recount is not None and (done := self.recount()) > self.bar.n:
            self.bar.update(done - self.bar.n)

    def log(self, line: str) -> None:
        if self.quiet:
            print(line, flush=True)
        else:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


class WorkCounter:
    """Trainer callback counting a run's work on the bar (epochs, or with ``seconds`` the seconds
    of its budget used); ``finish`` adds the planned work the run did not do (pruned early,
    failed, or resumed from a checkpoint)."""

    def __init__(self, progress: Progress, seconds: bool):
        self.progress, self.seconds, self.seen = progress, seconds, 0

    def __call__(self, epoch: int, stats: dict[str, float]) -> None:
        work = round(stats["elapsed_seconds"]) - self.seen if self.seconds else 1
        self.seen += work
        self.progress.add(work)

    def finish(self, planned: int) -> None:
        self.progress.add(max(0, planned - self.seen))
        self.progress.run_finished()
        self.seen = 0
