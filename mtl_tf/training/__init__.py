"""Training: a config in, a trained and evaluated run directory out.

  trainer     the flow: `train_and_evaluate`, the single-task and grid baselines,
              `restore_run`, `evaluate_workdir`;
  settings    `TrainSettings`: every trainer field read and checked once;
  build       the benchmark (one task for single_task), optimizer and schedule, model;
  evaluation  `evaluate_model`: a model's metrics by task;
  config      `base_config`, `load` (`path[:variant]`), `apply_overrides`, `parse_value`;
  workdir     the run directory's files, atomic JSON, `load_results`, `versions`;
  callbacks   `BestCheckpoint`, the atomic epoch backup, TensorBoard;
  grid        the simplex grid of the static-weights baseline;
  distribute  strategies from a flag and the one `fit` the trainer calls.

Import the modules themselves (`from mtl_tf.training import trainer`); this file imports
nothing, so the lower ones (config, grid) load without the trainer.
"""
