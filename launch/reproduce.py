"""Reproduces a paper table: trains its missing runs, prints ours beside the published numbers.

  python launch/reproduce.py --table=lee_son_table1_multi_fashion \
      --methods=uniform,mgda_ub,single_step,split_only,uncertainty --seeds=0,1,2 --root=runs/table1

For every run of the table (method x seed) `<root>/<run>/` is trained with
launch/train.py's trainer unless it already holds a results.json, so an
interrupted reproduction resumes and a finished one only re-renders. Then the
table (mean +- std over seeds beside the published numbers) is printed and
written to `<root>/<table>.md`, and the table's figures (PNG) to `<root>/`.
Runs whose config differs from the table's protocol (e.g. through --config_overrides) are
named in the table's first line and in the figures' titles ("NOT the paper protocol: config
overrides epochs=1, ..."), so a quick reproduction never passes for the paper's protocol.

Flags:
  --table             one of the registered tables (--list shows them);
  --methods           comma-separated; default: the table's own list;
  --seeds             comma-separated training seeds (default 0);
  --root              where the runs go (default runs/<table>);
  --config_overrides  field=value, repeatable or comma-free per flag, applied to every run,
                      e.g. --config_overrides=epochs=1 --config_overrides=data.max_train_examples=2000;
  --launcher          auto | inprocess | subprocess (auto: in-process unless --strategy is not default);
  --strategy, --data_dir as in launch/train.py; --dry_run lists the runs without training.

TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit) stay out of the terminal unless
TF_CPP_MIN_LOG_LEVEL is set (`TF_CPP_MIN_LOG_LEVEL=0` shows them; launch/_quiet.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import launch._quiet  # noqa: E402,F401  (first: keeps TensorFlow's start-up notices out of the terminal)

from absl import app, flags  # noqa: E402

from mtl_tf import reports  # noqa: E402
from mtl_tf.reports import runner  # noqa: E402
from mtl_tf.training import distribute, interrupts  # noqa: E402

_TABLE = flags.DEFINE_string("table", None, "Registered paper table.")
_METHODS = flags.DEFINE_list("methods", [], "Methods (default: the table's).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds.")
_ROOT = flags.DEFINE_string("root", None, "Directory of the runs (default runs/<table>).")
_OVERRIDES = flags.DEFINE_multi_string("config_overrides", [], "field=value applied to every run.")
_LAUNCHER = flags.DEFINE_enum("launcher", "auto", list(runner.LAUNCHERS), "How runs are trained.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES), "Distribution strategy.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data set location (config.data.data_dir).")
_VERBOSE = flags.DEFINE_integer("verbose", 2, "Keras verbosity of each run.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs, train nothing.")
_LIST = flags.DEFINE_bool("list", False, "List the registered tables and exit.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _LIST.value:
        for name in reports.available():
            print(f"{name}: {reports.get(name).description}")
        return
    if not _TABLE.value:
        raise app.UsageError(f"--table is required; one of {reports.available()}")
    root = Path(_ROOT.value or Path("runs") / _TABLE.value)
    # A batch scheduler stops a job with SIGTERM (then SIGKILL after a grace period).
    interrupts.handle_sigterm()
    try:
        outcome = runner.run_table(
            _TABLE.value,
            root=root,
            methods=_METHODS.value,
            seeds=[int(s) for s in _SEEDS.value],
            overrides=runner.parse_overrides(_OVERRIDES.value),
            launcher=_LAUNCHER.value,
            strategy=_STRATEGY.value,
            data_dir=_DATA_DIR.value,
            verbose=_VERBOSE.value,
            dry_run=_DRY_RUN.value,
        )
    except runner.OverrideError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as error:  # Ctrl-C, or a scheduler's SIGTERM (interrupts.handle_sigterm)
        what, code = interrupts.describe(error)
        print(f"\n{what}: the finished runs under {root} are kept and the current one resumes from its last "
              "finished epoch; run the same command to continue.", file=sys.stderr)
        sys.exit(code)
    print()
    print(reports.get(_TABLE.value).description)
    print()
    print(outcome["markdown"])
    print()
    print(f"table: {outcome['table_path']}")
    for path in outcome["figures"]:
        print(f"figure: {path}")


if __name__ == "__main__":
    app.run(main)
