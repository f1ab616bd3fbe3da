"""A sweep in MLflow: a parent run per sweep, a child run per trial (its resolved config as params, the
fine-tuning losses by step, val_acc at each validation, the trial's guidance as sample.guidance), found again on resume so nothing is logged twice.
"""

from __future__ import annotations

import math

from ray.tune.logger import LoggerCallback

from rdistill.config import flatten, to_dict
from rdistill.sweep.settings import LOSSES, METRIC, SweepSettings, trial_config, trial_dir

TRACKED = (*LOSSES, METRIC, "val_best_acc", "epoch")  # result keys logged as MLflow metrics


def mlflow_client(settings: SweepSettings):
    """A client of the sweep's store and the ids of its experiment and of the sweep's parent run."""
    from rdistill.tracking import client, experiment_id

    c = client(settings.tracking_uri)
    exp_id = experiment_id(c, settings.experiment)
    tags = {"rdistill.sweep.tuner": settings.name, "rdistill.role": "sweep"}
    found = find_runs(c, exp_id, tags)
    return c, exp_id, found[0] if found else c.create_run(exp_id, run_name=settings.name, tags=tags).info.run_id


def find_runs(client, exp_id: str, tags: dict) -> list[str]:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return [r.info.run_id for r in client.search_runs([exp_id], query)]


class MlflowTrials(LoggerCallback):
    """Tune -> MLflow: one child run per trial under the sweep's run, with the trial's resolved config as
    params, the fine-tuning losses against the fine-tuning step and val_acc at each validation. A trial
    that resumes after a restore finds its run again (tag rdistill.trial_id), so no trial is logged twice."""

    def __init__(self, settings: SweepSettings):
        self.settings = settings
        self._client = None
        self._runs: dict[str, str] = {}

    def __getstate__(self):  # Tune pickles its callbacks with the experiment; the client stays behind
        return {**self.__dict__, "_client": None, "_runs": {}}

    def setup(self, *args, **kwargs):
        self._client, self._exp, self._parent = mlflow_client(self.settings)

    def log_trial_start(self, trial):
        tags = {"rdistill.trial_id": trial.trial_id, "mlflow.parentRunId": self._parent}
        found = find_runs(self._client, self._exp, tags)
        if found:
            self._runs[trial.trial_id] = found[0]
            self._client.update_run(found[0], status="RUNNING")
            return
        run = self._client.create_run(self._exp, run_name=f"trial {trial.trial_id}", tags=tags)
        self._runs[trial.trial_id] = run.info.run_id
        from mlflow.entities import Param

        from rdistill import storage

        cfg = trial_config(self.settings, trial.config, storage.join(trial_dir(self.settings, trial.trial_id), "finetune"))
        params = {**flatten(to_dict(cfg)), "sample.guidance": trial.config["guidance"]}  # the sampler's axis
        self._client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_trial_result(self, iteration: int, trial, result: dict):
        from mlflow.entities import Metric

        step = int(result.get("step") or result["training_iteration"])
        ms = [Metric(k, float(result[k]), int(1000 * result.get("timestamp", 0)), step) for k in TRACKED
              if isinstance(result.get(k), (int, float)) and math.isfinite(result[k])]
        if ms:
            self._client.log_batch(self._runs[trial.trial_id], metrics=ms)

    def log_trial_end(self, trial, failed: bool = False):
        self._client.set_terminated(self._runs[trial.trial_id], "FAILED" if failed else "FINISHED")
