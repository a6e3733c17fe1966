"""CelebA, 40 binary attributes on ResNet-18 (Sener & Koltun, NeurIPS 2018, section 4.2, Tables 1-2).

The 40 attributes of the aligned CelebA images as 40 two-way classification tasks; 64x64 inputs
with the official code's normalisation (BGR, mean subtraction, per-image min-max); the official
train / val / test partition (the best epoch is picked on val by the mean accuracy); a ResNet-18
trunk (3x3 stride-1 stem, no max-pool, 2048-d representation) and one linear `Dense(2)` head per
attribute, initialised as the official PyTorch code is, with PyTorch's defaults (kernels and head
biases uniform in +-1/sqrt(fan_in); model.initializer=torch, or keras for glorot-uniform kernels
and zero biases).

Hyper-parameters (Sener's code and paper): Adam, learning rate 5e-4, batch 256, 100 epochs, the
learning rate times 0.85 every 10 epochs (the official training loop), MGDA / MGDA-UB gradient
normalisation `loss+`; Kendall's uncertainty weighting in its classification form. Grid search is
infeasible at 40 tasks (the paper skips it too).

Variants (`--config=configs/celeba.py:VARIANT`):
  (none)  the paper's setting;
  smoke   a pipeline check on the real data (2,048 training and 512 val / test images, batch 32,
          one epoch, the full ResNet-18): not a result.

Run (any method of `mtl_tf.balancers.available()`, or `single_task`):

  python launch/train.py --config=configs/celeba.py --config.method=mgda_ub \
      --data_dir=/data/celeba --workdir=runs/celeba_mgda_ub
  python launch/train.py --config=configs/celeba.py --config.method=single_task \
      --config.single_task.task=Smiling --data_dir=/data/celeba --workdir=runs/celeba_single_Smiling
  python launch/train.py --config=configs/celeba.py:smoke --config.method=mgda_ub \
      --data_dir=/data/celeba --workdir=/tmp/celeba_smoke
  python launch/reproduce.py --table=sener_table1 --data_dir=/data/celeba --seeds=0

--data_dir holds img_align_celeba/, list_attr_celeba.txt and list_eval_partition.txt (the
release's Img/, Anno/, Eval/ folders work too); without it a prepared TFDS `celeb_a` is used
(--config.data.tfds_data_dir). The first run decodes every image once into the cache
(--config.data.cache_dir, default $MTL_TF_CACHE or ~/.cache/mtl_tf; about 2.5 GB at 64x64).
--config.data.attributes=Smiling,Male trains only those heads.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common
from mtl_tf.training.config import base_config

VARIANTS = ("smoke",)


def get_config(arg=None):
    variants = common.parse_variants(arg, VARIANTS)
    config = base_config()
    config.benchmark = "celeba"
    config.seed = 0
    config.epochs = 100
    config.batch_size = 256
    config.method = "uniform"
    config.method_options = ml_collections.ConfigDict(
        {
            "mgda": {"normalization": "loss+"},
            "mgda_ub": {"normalization": "loss+"},
            # Each attribute is a softmax classification.
            "uncertainty": {"task_types": "classification"},
        }
    )
    config.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 5e-4})
    config.schedule = ml_collections.ConfigDict(
        {"name": "multistep", "milestones": tuple(range(9, 100, 10)), "factor": 0.85}
    )
    config.data = ml_collections.ConfigDict(
        {
            "data_dir": placeholder(str),
            "tfds_data_dir": placeholder(str),
            "tfds_download": False,
            "cache_dir": placeholder(str),
            "image_size": 64,
            "normalization": "sener",
            "eval_batch_size": 256,
            "max_train_examples": placeholder(int),
            "max_eval_examples": placeholder(int),
            "drop_remainder": False,
            # None: all 40; a list or "A,B" trains only those attributes' heads.
            "attributes": placeholder(object),
        }
    )
    config.model = ml_collections.ConfigDict({"width": 64, "pool_size": 4, "initializer": "torch"})
    config.train.tensorboard_update_freq = 100

    if "smoke" in variants:
        config.epochs = 1
        config.batch_size = 32
        config.data.eval_batch_size = 64
        config.data.max_train_examples = 2048
        config.data.max_eval_examples = 512
        config.schedule = ml_collections.ConfigDict({"name": "constant", "milestones": (), "factor": 0.5})
        config.train.tensorboard_update_freq = 10
    return config
