"""A TensorFlow Datasets pipeline feeding `MultiTaskModel.fit` with `(x, {task: y})`.

Run: python examples/tfds_dataset.py          (mock data: no download; a few seconds)
     python examples/tfds_dataset.py --real   (the real Fashion-MNIST: tfds downloads
                                                and prepares it once, then reads it)

By default the data come from `tfds.testing.mock_data`: `tfds.load` returns
random examples with the real data set's features (28x28x1 uint8 images, labels
0..9) and neither downloads nor needs a prepared copy, so the example runs on a
machine without internet and shows the pipeline, not a result (the accuracies
are chance). With `--real` the same code loads the real data.

Two tasks from one labelled data set: `item`, the Fashion-MNIST class (10
classes), and `kind`, its group: clothing, footwear or bag (3 classes). The
`map` turns each `(image, label)` into `(image / 255, {"item": label, "kind":
group})`, which is what `MultiTaskModel` reads; a third element, a sample
weight (one for all tasks or a dict keyed by task), would be read too.

Needs tensorflow-datasets (in the `launch` and `test` extras).

(The Debian package `dataset-fashion-mnist` puts the IDX files in
/usr/share/datasets/fashion-mnist; `mtl_tf.data.idx.load_idx_dataset(directory)`
reads them into NumPy arrays, and `tf.data.Dataset.from_tensor_slices` gives
the same pipeline without tfds.)
"""

import argparse
import contextlib

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

import mtl_tf

# Fashion-MNIST classes: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat,
# 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.
KIND_OF_ITEM = tf.constant([0, 0, 0, 0, 0, 1, 0, 1, 2, 1], tf.int64)  # 0 clothing, 1 footwear, 2 bag


def to_multi_task(image, label):
    return tf.cast(image, tf.float32) / 255.0, {"item": label, "kind": tf.gather(KIND_OF_ITEM, label)}


def pipeline(split, batch_size, shuffle):
    dataset = tfds.load("fashion_mnist", split=split, as_supervised=True)
    if shuffle:
        dataset = dataset.shuffle(1024, seed=0)
    return dataset.map(to_multi_task, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="load the real data set (downloads it once)")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    # Mock: 256 random examples per split, with Fashion-MNIST's features.
    data = contextlib.nullcontext() if args.real else tfds.testing.mock_data(num_examples=256)
    with data:
        train = pipeline("train[:2048]" if args.real else "train", batch_size=64, shuffle=True)
        test = pipeline("test[:1024]" if args.real else "test", batch_size=256, shuffle=False)
        image, targets = train.element_spec
        print("element spec:", image, targets)

        model = mtl_tf.MultiTaskModel(
            encoder=keras.Sequential([
                keras.Input(shape=(28, 28, 1)),
                keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(32, activation="relu"),
            ]),
            heads={"item": keras.layers.Dense(10), "kind": keras.layers.Dense(3)},
            losses={task: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for task in ("item", "kind")},
            metrics={"item": ["accuracy"], "kind": ["accuracy"]},
            balancer="mgda_ub",
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(train, validation_data=test, epochs=2, verbose=2)
        scores = model.evaluate(test, return_dict=True, verbose=0)
    print("test:", {k: round(float(v), 3) for k, v in sorted(scores.items())})


if __name__ == "__main__":
    main()
