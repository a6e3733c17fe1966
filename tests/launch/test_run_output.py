"""What launch/train.py says and writes around a run: the start / resume banner, Ctrl-C (one line, exit
130, the same command resumes), TensorBoard steps that continue after a resume, the workdir lock, and
refusals before training. train.py's `main` runs in this process (its absl flags are defined once)."""

import functools
import importlib.util
import json
import re
import sys

import keras
import pytest
from absl import flags

from mtl_tf.training import distribute, trainer
from tests.launch import events
from tests.launch.conftest import REPO, TINY, flag_args


@functools.lru_cache(maxsize=None)
def train_module():
    # Once per process: the script defines absl flags at import.
    spec = importlib.util.spec_from_file_location("launch_train", REPO / "launch" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(args):
    """launch/train.py's main with `args`; returns the exit code (0 when it returns)."""
    module = train_module()
    argv = ["train.py", *[str(a) for a in args]]
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:  # config_flags defines one per override
        delattr(flags.FLAGS, name)
    saved_argv, sys.argv = sys.argv, argv  # config_flags reads the --config.<field> overrides from sys.argv
    try:
        keras.backend.clear_session()
        module.main(module.parse_flags(argv))
    except SystemExit as exit_:
        return exit_.code
    finally:
        sys.argv = saved_argv
    return 0


class _InterruptAt(keras.callbacks.Callback):
    """Ctrl-C when the given epoch starts."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_banner_ctrl_c_and_a_resume_that_continues_the_tensorboard_steps(fake_fashion_dir, tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "run"
    args = ["--config=configs/multi_fashion.py:smoke", "--config.method=uniform", "--config.epochs=2",
            "--config.train.tensorboard_update_freq=2", *flag_args(TINY), f"--data_dir={fake_fashion_dir}",
            f"--workdir={workdir}", "--verbose=2"]
    real_fit = distribute.fit

    def interrupted_fit(model, train, **kwargs):
        return real_fit(model, train, **{**kwargs, "callbacks": [*kwargs["callbacks"], _InterruptAt(1)]})

    monkeypatch.setattr(distribute, "fit", interrupted_fit)
    assert run_main(args) == 130
    out, err = capsys.readouterr()
    assert "mtl_tf: uniform on multi_fashion, seed 0, 2 epochs of batch 64" in out
    assert f"workdir:     {workdir}" in out and f"tensorboard --logdir {workdir / 'tensorboard'}" in out
    assert "starting at epoch 1" in out
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"interrupted: epoch 1 is saved in {workdir / 'backup'}. Run the same command to resume."

    # Temporaries a crash can leave (a best-weights write, an atomic JSON write): removed at the restart.
    stale = [workdir / ".best.999999.0a1b2c3d.weights.h5", workdir / ".train_state.json.999999.0a1b2c3d.tmp"]
    for path in stale:
        path.write_text("partial")
    monkeypatch.setattr(distribute, "fit", real_fit)
    assert run_main(args) == 0
    assert not any(path.exists() for path in stale)
    out, _ = capsys.readouterr()
    best = json.loads((workdir / "results.json").read_text())["history"][0]["val_monitor"]
    assert f"resuming after epoch 1 of 2 (restored from {workdir / 'backup'}); best so far: epoch 1, " \
           f"val_monitor {best:.4f}" in out
    assert re.search(r"results: .*results\.json", out)

    # 4 steps per epoch, a batch scalar every 2nd step: the resumed epoch continues at steps 6, 8 (not 2, 4 again).
    logged = events.scalars(workdir / "tensorboard" / "train")
    assert [s for s, _ in logged["batch_loss"]] == [2, 4, 6, 8]
    assert [s for s, _ in logged["epoch_loss"]] == [0, 1]
    assert len(list((workdir / "tensorboard" / "train").glob("events.out.tfevents.*"))) == 2  # one per session


def test_refusals_before_training_name_what_is_wrong(fake_fashion_dir, tmp_path, capsys):
    base = ["--config=configs/multi_fashion.py:smoke", *flag_args(TINY), f"--data_dir={fake_fashion_dir}"]
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["--config.optimizer.learning_rate=0", f"--workdir={tmp_path / 'a'}"], "'optimizer.learning_rate' is 0.0"),
        (["--config.epochs=0", f"--workdir={tmp_path / 'b'}"], "'epochs' is 0; expected an integer >= 1"),
        (["--config.batch_size=0", f"--workdir={tmp_path / 'c'}"], "'batch_size' is 0; expected an integer >= 1"),
        ([f"--workdir={tmp_path / 'a_file'}"], f"--workdir {tmp_path / 'a_file'} is an existing file"),
    ]
    for extra, message in cases:
        assert run_main([*base, *extra]) == 2, message
        err = capsys.readouterr().err
        assert f"error: config field {message}" in err or f"error: {message}" in err, err
    assert not any((tmp_path / d).exists() for d in "abc")
    assert run_main([*base, "--config.foo=1", f"--workdir={tmp_path / 'd'}"]) == 2
    assert "error: --config.foo: no such field in the config configs/multi_fashion.py:smoke" in capsys.readouterr().err


def test_a_locked_workdir_is_refused_at_once(fake_fashion_dir, tmp_path, capsys):
    from tests.training.test_workdir import _start_holder

    holder = _start_holder(tmp_path / "run")  # another process trains there
    try:
        args = ["--config=configs/multi_fashion.py:smoke", *flag_args(TINY), f"--data_dir={fake_fashion_dir}",
                f"--workdir={tmp_path / 'run'}"]
        assert run_main(args) == 1
        assert f"error: {tmp_path / 'run'} is in use by process {holder.pid} on host " in capsys.readouterr().err
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_mirrored_batches_the_replicas_cannot_split_are_refused_before_training(fake_fashion_dir, tmp_path,
                                                                                mirrored_strategy, monkeypatch):
    from tests.launch.test_train import tiny_config

    monkeypatch.setattr(trainer, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(trainer.RunRefused, match="'batch_size' is 63, which does not split over the strategy's 2 replicas"):
        trainer.train_and_evaluate(tiny_config(fake_fashion_dir, batch_size=63), tmp_path / "odd", strategy=mirrored_strategy)
    # 255 training examples in batches of 64: the last batch holds 63, enough for 2 replicas; 257 leaves 1.
    config = tiny_config(fake_fashion_dir, **{"data.max_train_examples": 257, "data.pareto_sizes": (257, 64, 64)})
    with pytest.raises(trainer.RunRefused, match=r"the train split has 257 examples: its last batch holds 1 \(batch size "
                                                 r"64\), fewer than the strategy's 2 replicas"):
        trainer.train_and_evaluate(config, tmp_path / "last", strategy=mirrored_strategy)


def test_bad_method_and_model_options_are_refused_before_the_data_and_leave_nothing_behind(
        fake_fashion_dir, tmp_path, capsys, monkeypatch):
    workdir = tmp_path / "run"
    base = ["--config=configs/multi_fashion.py:smoke", *flag_args(TINY), f"--data_dir={fake_fashion_dir}",
            f"--workdir={workdir}", "--verbose=0"]
    monkeypatch.setattr(trainer, "build_benchmark", lambda *a, **k: pytest.fail("the data set was built"))
    cases = [
        (["--config.method=cagrad", "--config.balancer.c=-1"],
         "error: config field 'balancer.c': cagrad c must be a finite number >= 0; got -1 (--config.balancer.c=...)"),
        (["--config.method=mgda", "--config.balancer.max_iterations=0"],
         "error: config field 'balancer.max_iterations': mgda max_iterations must be an integer >= 1 or None; got 0 "
         "(--config.balancer.max_iterations=...)"),
        (["--config.model.name=mmoe", "--config.model.num_experts=0"],
         "error: config field 'model.num_experts': MMoE: num_experts must be an integer >= 1; got 0 "
         "(--config.model.num_experts=...)"),
    ]
    for extra, message in cases:
        assert run_main([*base, *extra]) == 2, message
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert err == [message]
        assert not workdir.exists()
    monkeypatch.undo()

    # Refused while loading the data: no config.json is left to block another config in the same workdir.
    with pytest.raises(Exception, match="fashion"):
        run_main([*base, "--config.method=cagrad", f"--data_dir={tmp_path / 'no_data'}"])
    assert not (workdir / "config.json").exists()
    capsys.readouterr()

    # The corrected command in the same workdir trains.
    assert run_main([*base, "--config.method=cagrad", "--config.balancer.c=0.4"]) == 0
    assert json.loads((workdir / "config.json").read_text())["balancer"]["c"] == 0.4
