"""Writes one `.keras` file per method, and what it evaluates to, for `test_saved_before.py`.

Run once with the code whose files must keep loading (here: the last commit
before the numerics moved to `keras.ops`, ddb1661):
`PYTHONPATH=<that checkout> python -m tests.saved_before.write tests/saved_before/files`.
Each model is the small two-task model of `tests/test_model.py`, trained four
steps with SGD and momentum (so the method's state and the optimizer's have
moved), saved, then evaluated on fixed data; the metrics and the balancer's
variables go to `expected.json`.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

import mtl_tf
from tests.test_model import ROUND_TRIPS, make_data, make_model

OPTIONS = {**ROUND_TRIPS, "static": {"weights": {"reg": 2.0, "cls": 0.5}},
           "uncertainty": {"task_types": ["classification", "regression"]}}


def main(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    x, y = make_data()
    x_eval, y_eval = make_data(seed=1)
    expected = {"written_by": subprocess.run(["git", "-C", str(Path(mtl_tf.__file__).parents[1]), "rev-parse",
                                              "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    for method in mtl_tf.balancers.available():
        model = make_model(method, OPTIONS.get(method))
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model.save(directory / f"{method}.keras")
        scores = model.evaluate(x_eval, y_eval, batch_size=16, verbose=0, return_dict=True)
        expected[method] = {
            "evaluate": {k: float(v) for k, v in scores.items()},
            "balancer_weights": [np.asarray(w).tolist() for w in model.balancer.weights],
        }
    (directory / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
