"""Cityscapes with SegNet: 7-class segmentation and depth at 128x256 (Lee & Son, Table 2).

MTAN's preprocessed Cityscapes (Liu et al., CVPR 2019) under --data_dir:
{train,val}/{image,label,depth}/{i}.npy (MTAN's release names the label folder label_7; both are
found). SegNet encoder shared by the tasks, one SegNet decoder per task, as Lee & Son describe.

Hyper-parameters: Lee & Son follow MTAN's set-up without stating it; MTAN trains with Adam,
learning rate 1e-4 halved after 100 epochs, 200 epochs, batch 8 for Cityscapes (MTAN paper; its
code's NYUv2 script uses batch 2). MTAN's val folder is the test split (MTAN and Lee & Son report
it); data.val_size holds the last training images out for model selection.

Initialisation (model.initializer): mtan (the default) is MTAN's official code, which
re-initialises every convolution with xavier_normal_ and zero biases after construction, so
PyTorch's own layer default is not its start; torch (kernels and biases uniform in
+-1/sqrt(fan_in)) and keras (glorot-uniform, zero biases) are the alternatives.

Variants (`--config=configs/cityscapes_segnet.py:VARIANT`):
  (none)  the paper's setting;
  (any)   --config.model.name=mtan trains MTAN's attention network on the same SegNet
          (mtl_tf.nets.mtan; every method, mgda_ub on the shared SegNet's maps);
  smoke   a pipeline check on the real data (16 images, one epoch): not a result.

Run (any method of `mtl_tf.balancers.available()`, `single_task` or `grid`):

  python launch/train.py --config=configs/cityscapes_segnet.py --config.method=single_step \
      --data_dir=/data/mtan_cityscapes --workdir=runs/cityscapes_segnet_single_step
  python launch/train.py --config=configs/cityscapes_segnet.py --config.method=single_task \
      --config.single_task.task=depth --data_dir=/data/mtan_cityscapes --workdir=runs/cityscapes_segnet_single_depth
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common
from mtl_tf.training.config import base_config

VARIANTS = ("smoke",)


def get_config(arg=None):
    variants = common.parse_variants(arg, VARIANTS)
    config = base_config()
    config.benchmark = "cityscapes_segnet"
    config.seed = 0
    config.epochs = 200
    config.batch_size = 8
    config.method = "uniform"
    # Kendall et al.'s softmax likelihood for segmentation, Gaussian for the regressions.
    config.method_options = ml_collections.ConfigDict({"uncertainty": {"task_types": ("classification", "regression")}})
    config.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-4})
    config.schedule = ml_collections.ConfigDict({"name": "multistep", "milestones": (100,), "factor": 0.5})
    config.data = ml_collections.ConfigDict(
        {
            "data_dir": placeholder(str),
            "image_size": (128, 256),
            "label_folder": placeholder(str),
            "val_size": 0,
            "eval_batch_size": 8,
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
