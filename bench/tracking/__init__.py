"""Every MLflow call: runs and their metrics (:mod:`.runs`), what a training records
(:mod:`.record`), a tuning study's run (:mod:`.studies`), logged models (:mod:`.models`,
:mod:`.serving`), and reading runs back for reports (:mod:`.query`)."""

from bench.tracking.runs import (
    METRIC_GROUPS,
    active_run_id,
    cpu_name,
    end_orphaned_runs,
    environment,
    latest_experiment,
    log_metrics,
    log_perf,
    metric_name,
    tracking_uri,
    training_view,
    use_experiment,
)

__all__ = [
    "METRIC_GROUPS",
    "active_run_id",
    "cpu_name",
    "end_orphaned_runs",
    "environment",
    "latest_experiment",
    "log_metrics",
    "log_perf",
    "metric_name",
    "tracking_uri",
    "training_view",
    "use_experiment",
]
