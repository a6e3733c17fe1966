"""Benchmark "celeba": the 40 CelebA attributes as 40 binary tasks on ResNet-18.

Sener & Koltun (NeurIPS 2018, section 4.2): a ResNet-18 trunk (64x64 inputs,
2048-d representation, `mtl_tf.nets.resnet`) shared by one linear head
`Dense(2)` per attribute; each task's loss is the cross-entropy of its two
logits (the official code's log-softmax + NLL), its metric the accuracy. Tasks
are named after the attributes, in the official file's order
(`mtl_tf.data.celeba.ATTRIBUTES`). The best epoch is the one with the highest
mean validation accuracy over the tasks; the paper reports the test error
(100 - accuracy, in percent) per attribute and its mean (Table 1, Figure 2).

Config fields read, once, into `CelebASettings` (see `configs/celeba.py`):
  seed, batch_size;
  data.data_dir, data.tfds_data_dir, data.tfds_download, data.cache_dir,
  data.image_size, data.normalization, data.eval_batch_size,
  data.max_train_examples, data.max_eval_examples, data.drop_remainder,
  data.attributes (None: all 40; a list or a comma-separated string of
  attribute names trains only those heads, e.g. one attribute for the
  single-task baseline);
  model.width (64: ResNet-18), model.pool_size (4), model.initializer
  (`torch`, the default: PyTorch's default initialisation, which Sener's
  official code keeps; `keras`: glorot-uniform kernels, zero biases).
"""

from __future__ import annotations

import dataclasses

import keras

from mtl_tf.benchmarks.registry import Benchmark, register
from mtl_tf.config_fields import read
from mtl_tf.data import celeba as celeba_data
from mtl_tf.nets import initializers as init_lib
from mtl_tf.nets import resnet

NAME = "celeba"


def selected_attributes(value) -> tuple[str, ...]:
    """The attributes a config selects: None/empty -> all 40, else a list or "A,B"."""
    if value is None or value == "" or value == ():
        return celeba_data.ATTRIBUTES
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in celeba_data.ATTRIBUTES]
    if unknown or not names:
        raise ValueError(
            f"data.attributes names {unknown or names} which are not CelebA attributes; "
            f"expected a subset of {list(celeba_data.ATTRIBUTES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"data.attributes lists an attribute twice: {names}")
    # Official order, so task order never depends on how the user typed them.
    return tuple(a for a in celeba_data.ATTRIBUTES if a in names)


@dataclasses.dataclass(frozen=True)
class CelebASettings:
    """The config fields of the CelebA benchmark, read and checked once (`from_config`)."""

    seed: int
    batch_size: int
    attributes: tuple
    image_size: int
    data_dir: str | None
    eval_batch_size: int | None
    normalization: str
    cache_dir: str | None
    tfds_data_dir: str | None
    tfds_download: bool
    max_train_examples: int | None
    max_eval_examples: int | None
    drop_remainder: bool
    initializer: str
    width: int
    pool_size: int

    @classmethod
    def from_config(cls, config) -> CelebASettings:
        return cls(
            seed=read(config, "seed", cast=int),
            batch_size=read(config, "batch_size", cast=int),
            attributes=selected_attributes(read(config, "data.attributes", None)),
            image_size=read(config, "data.image_size", celeba_data.DEFAULT_IMAGE_SIZE, int),
            data_dir=read(config, "data.data_dir", None),
            eval_batch_size=read(config, "data.eval_batch_size", None),
            normalization=read(config, "data.normalization", "sener"),
            cache_dir=read(config, "data.cache_dir", None),
            tfds_data_dir=read(config, "data.tfds_data_dir", None),
            tfds_download=read(config, "data.tfds_download", False, bool),
            max_train_examples=read(config, "data.max_train_examples", None),
            max_eval_examples=read(config, "data.max_eval_examples", None),
            drop_remainder=read(config, "data.drop_remainder", False, bool),
            initializer=init_lib.check_initializer(
                read(config, "model.initializer", "torch"), owner="model.initializer"
            ),
            width=read(config, "model.width", 64, int),
            pool_size=read(config, "model.pool_size", 4, int),
        )


@register(NAME)
def build(config) -> Benchmark:
    settings = CelebASettings.from_config(config)
    attributes, seed, initializer = settings.attributes, settings.seed, settings.initializer
    data = celeba_data.celeba_datasets(
        settings.data_dir,
        batch_size=settings.batch_size,
        eval_batch_size=settings.eval_batch_size,
        image_size=settings.image_size,
        normalization=settings.normalization,
        seed=seed,
        cache_dir=settings.cache_dir,
        tfds_data_dir=settings.tfds_data_dir,
        tfds_download=settings.tfds_download,
        max_train_examples=settings.max_train_examples,
        max_eval_examples=settings.max_eval_examples,
        drop_remainder=settings.drop_remainder,
    )
    splits = {"train": data.train, "val": data.val, "test": data.test}
    if attributes != celeba_data.ATTRIBUTES:
        def keep(x, y):
            return x, {a: y[a] for a in attributes}

        splits = {k: v.map(keep) for k, v in splits.items()}

    encoder = resnet.resnet18_encoder(
        width=settings.width, pool_size=settings.pool_size, seed=seed, initializer=initializer
    )
    heads = {
        a: resnet.attribute_head(
            2, seed=seed + 1000 + celeba_data.ATTRIBUTES.index(a), initializer=initializer, name=f"head_{a}"
        )
        for a in attributes
    }
    return Benchmark(
        name=NAME,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        encoder=encoder,
        heads=heads,
        losses={a: keras.losses.SparseCategoricalCrossentropy(from_logits=True, name=f"{a}_ce") for a in attributes},
        metrics={a: ["accuracy"] for a in attributes},
        monitor=[f"{a}_accuracy" for a in attributes],
        monitor_mode="max",
        sizes=dict(data.sizes),
        input_shape=data.image_shape,
        evaluate=None,
    )
