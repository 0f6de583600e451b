"""The names of the files the workflow writes and reads, in one place.

A training run's folder (``engine.writer``), a prune's folder (``prune.pipeline``), a
comparison (``comparison.compare``) and the pipeline that strings them together
(``commands.pipeline``) all spell their files from here, so a stage finds what the stage
before wrote.
"""

# a training run (train, sparse, finetune): engine.writer
MODEL_CFG = "model.cfg"  # the cfg trained
RUN_RECORD = "run.json"  # the settings used
CHECKPOINT = "last.pt"  # resumable checkpoint, written first after every epoch
LAST_WEIGHTS = "last.weights"  # Darknet weights of the last completed epoch (EMA copy)
BEST_WEIGHTS = "best.weights"  # ... of the epoch with the best mAP@.5:.95
RESULTS_JSON, RESULTS_CSV, RESULTS_CHART = "results.json", "results.csv", "results.png"
GAMMA_STATS, GAMMA_CHART = "gamma_stats.json", "gamma_hist.png"  # sparse training's hook

# a prune: prune.pipeline
PRUNED_CFG, PRUNED_WEIGHTS = "pruned.cfg", "pruned.weights"
PRUNE_REPORT, PRUNE_CHART = "prune_report.json", "prune_report.png"

# a comparison: comparison.compare
COMPARE_MD, COMPARE_JSON, COMPARE_CHART = "compare.md", "compare.json", "compare.png"

# an export: commands.export writes <cfg stem><suffix>; --int8 adds INT8_STEM before it
INT8_STEM = "-int8"

# the pipeline's manifest: commands.pipeline
PIPELINE_MANIFEST = "pipeline.json"
