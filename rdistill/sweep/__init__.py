"""The Fig. 6 sweep (Ray Tune + Optuna, MLflow), one module each, each importing only those above it:

    settings  the axes, the search space, the settings, a trial's config      (imports none of the others)
    trial     one trial: fine-tune (Ray Train) -> sample -> student -> val_acc (settings)
    tracking  MLflow: a parent run per sweep, a child run per trial           (settings)
    report    trial rows, Fig. 6 plots, the final test of best vs paper       (settings, tracking, trial)
    tuner     the Tuner, resume, run_sweep                                    (all of the above)
"""
