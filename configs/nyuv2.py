"""NYUv2 with SegNet: 13-class segmentation, depth and surface normals at 288x384 (Lee & Son, Table 3).

MTAN's preprocessed NYUv2 (Liu et al., CVPR 2019) under --data_dir:
{train,val}/{image,label,depth,normal}/{i}.npy (795 / 654 images). SegNet encoder shared by the
tasks, one SegNet decoder per task (the normal decoder's output L2-normalised).

Hyper-parameters (MTAN's code, which Lee & Son follow): Adam, learning rate 1e-4 halved after 100
epochs, 200 epochs, batch 2. MTAN's val folder is the test split; data.val_size holds the last
training images out for model selection. Initialisation (model.initializer): mtan, MTAN's own
(xavier-normal kernels, zero biases, which its code sets over PyTorch's defaults); torch or keras
as alternatives (see configs/cityscapes_segnet.py).

Variants (`--config=configs/nyuv2.py:VARIANT`):
  (none)  the paper's setting;
  (any)   --config.model.name=mtan trains MTAN's attention network on the same SegNet
          (mtl_tf.nets.mtan; every method, mgda_ub on the shared SegNet's maps);
  smoke   a pipeline check on the real data (16 images, one epoch): not a result.

Run (any method of `mtl_tf.balancers.available()`, `single_task` or `grid`):

  python launch/train.py --config=configs/nyuv2.py --config.method=single_step \
      --data_dir=/data/nyuv2 --workdir=runs/nyuv2_single_step
  python launch/train.py --config=configs/nyuv2.py --config.method=single_task \
      --config.single_task.task=normal --data_dir=/data/nyuv2 --workdir=runs/nyuv2_single_normal
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common
from mtl_tf.training.config import base_config

VARIANTS = ("smoke",)


def get_config(arg=None):
    variants = common.parse_variants(arg, VARIANTS)
    config = base_config()
    config.benchmark = "nyuv2_segnet"
    config.seed = 0
    config.epochs = 200
    config.batch_size = 2
    config.method = "uniform"
    # Kendall et al.'s softmax likelihood for segmentation, Gaussian for the regressions.
    config.method_options = ml_collections.ConfigDict({"uncertainty": {"task_types": ("classification", "regression", "regression")}})
    config.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-4})
    config.schedule = ml_collections.ConfigDict({"name": "multistep", "milestones": (100,), "factor": 0.5})
    config.data = ml_collections.ConfigDict(
        {
            "data_dir": placeholder(str),
            "image_size": (288, 384),
            "label_folder": placeholder(str),
            "val_size": 0,
            "eval_batch_size": 2,
            "max_train_examples": placeholder(int),
            "max_eval_examples": placeholder(int),
            "drop_remainder": False,
        }
    )
    config.model = ml_collections.ConfigDict(
        # MTAN's code (PyTorch) overrides PyTorch's default initialisation with its own ("mtan").
        {"filters": (64, 128, 256, 512, 512), "convs_per_block": (2, 2, 3, 3, 3), "initializer": "mtan"}
    )
    # model.name: "segnet" (shared encoder, one decoder per task, Lee & Son's set-up) or "mtan" (MTAN's
    # attention network on the same SegNet, mtl_tf.nets.mtan), which Lee & Son compare with.
    config.model.name = "segnet"
    config.evaluation = ml_collections.ConfigDict({"baseline_results": placeholder(object)})
    config.train.tensorboard_update_freq = 50

    if "smoke" in variants:
        config.epochs = 1
        config.batch_size = 2
        config.data.eval_batch_size = 2
        config.data.max_train_examples = 16
        config.data.max_eval_examples = 8
        config.schedule.name = "constant"
        config.grid.divisions = 2
        config.train.tensorboard_update_freq = 1
    return config
