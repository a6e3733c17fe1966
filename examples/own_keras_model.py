"""Your own functional Keras model, trained with MGDA-UB by `mtl_tf.MultiTaskModel`.

Run: python examples/own_keras_model.py   (a few seconds on a CPU)

The encoder and the two heads are ordinary functional Keras models; nothing in
them knows about multi-task learning. The data are NumPy arrays: noisy images
[N, 16, 16, 1] and one label array per task, each with a signal its task can
learn: task "bright" (2 classes), is the left half brighter than the right
(one half is lifted by 0.1); task "quadrant" (4 classes), which quadrant
holds a bright 3x3 square. Shown: fit with validation data, the per-task logs
in the History, evaluate, predict (a dict keyed by task), and a round trip
through a `.keras` file that predicts the same. The script checks that both
tasks learn: validation accuracy well above chance (1/2 and 1/4).
"""

import tempfile
from pathlib import Path

import keras
import numpy as np

import mtl_tf


def make_data(n, seed):
    """Images [n, 16, 16, 1] in [0, 1] and {"bright": [n] in {0, 1}, "quadrant": [n] in 0..3}."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 16, 16, 1), dtype=np.float32) * 0.5
    bright = rng.integers(0, 2, n).astype("int32")  # 1: the left half is brighter
    images[bright == 1, :, :8] += 0.1
    images[bright == 0, :, 8:] += 0.1
    quadrant = rng.integers(0, 4, n).astype("int32")  # 0 top left, 1 top right, 2 bottom left, 3 bottom right
    rows = 8 * (quadrant // 2) + rng.integers(0, 6, n)
    cols = 8 * (quadrant % 2) + rng.integers(0, 6, n)
    for i in range(n):
        images[i, rows[i]:rows[i] + 3, cols[i]:cols[i] + 3] = 1.0  # the square, inside its quadrant
    return images, {"bright": bright, "quadrant": quadrant}


def build_encoder():
    """The shared part: image -> representation z of 32 features."""
    inputs = keras.Input(shape=(16, 16, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    z = keras.layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, z, name="encoder")


def build_head(num_classes, name):
    """A task head: z -> logits over the task's classes."""
    z = keras.Input(shape=(32,), name=f"{name}_z")
    hidden = keras.layers.Dense(16, activation="relu")(z)
    return keras.Model(z, keras.layers.Dense(num_classes)(hidden), name=name)


def main(seed=0):
    keras.utils.set_random_seed(seed)  # the weights' initialisers and the shuffling
    x_train, y_train = make_data(1024, seed=2 * seed)
    x_val, y_val = make_data(256, seed=2 * seed + 1)

    model = mtl_tf.MultiTaskModel(
        encoder=build_encoder(),
        heads={"bright": build_head(2, "bright"), "quadrant": build_head(4, "quadrant")},
        losses={
            "bright": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "quadrant": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        metrics={"bright": ["accuracy"], "quadrant": ["accuracy"]},
        balancer="mgda_ub",
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=64, epochs=5, verbose=2)
    # Per task: {task}_loss, {task}_accuracy, {task}_weight (MGDA-UB's alpha), val_{task}_...
    print("task weights of the last step:", {t: round(history.history[f"{t}_weight"][-1], 3) for t in model.task_names})

    scores = model.evaluate(x_val, y_val, return_dict=True, verbose=0)
    print("validation:", {k: round(float(v), 3) for k, v in sorted(scores.items())})
    print(
        f"validation accuracy: bright {scores['bright_accuracy']:.2f} (chance 0.50), "
        f"quadrant {scores['quadrant_accuracy']:.2f} (chance 0.25)"
    )
    assert scores["bright_accuracy"] > 0.8 and scores["quadrant_accuracy"] > 0.6, "the model did not learn"

    logits = model.predict(x_val[:4], verbose=0)  # {"bright": [4, 2], "quadrant": [4, 4]}
    print("predicted quadrants:", logits["quadrant"].argmax(axis=-1), "true:", y_val["quadrant"][:4])

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.keras"
        model.save(path)
        restored = keras.models.load_model(path)  # `import mtl_tf` registers its classes with Keras
        again = restored.predict(x_val[:4], verbose=0)
    for task in model.task_names:
        np.testing.assert_allclose(again[task], logits[task], rtol=1e-5, atol=1e-6)
    print("the .keras file predicts the same:", restored.balancer.method_name)


if __name__ == "__main__":
    main()
