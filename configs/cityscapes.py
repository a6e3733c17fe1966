"""Cityscapes with three tasks (Sener & Koltun, NeurIPS 2018, section 4.3, Tables 2 and 4).

Segmentation (19 classes), instance centroid offsets and disparity from the official Cityscapes
layout (leftImg8bit/, gtFine/, disparity/ under --data_dir); 256x512 inputs with targets at 1/8;
a ResNet-50 dilated to output stride 8 shared by three pyramid-pooling decoders.

Hyper-parameters (Sener's code and paper): Adam, learning rate 5e-4, batch 8, 100 epochs, the
learning rate times 0.85 every 10 epochs (the official training loop), augmentation by a random
rotation of up to 10 degrees and a horizontal flip. The official val split is the test split;
there is no validation split unless data.val_cities names training cities to hold out.

Variants (`--config=configs/cityscapes.py:VARIANT`):
  (none)  the paper's setting;
  smoke   a pipeline check on the real data (a few images at 128x256, one epoch): not a result.

Run (any method of `mtl_tf.balancers.available()`, `single_task` or `grid`):

  python launch/train.py --config=configs/cityscapes.py --config.method=mgda_ub \
      --data_dir=/data/cityscapes --workdir=runs/cityscapes_mgda_ub
  python launch/train.py --config=configs/cityscapes.py --config.method=single_task \
      --config.single_task.task=segmentation --data_dir=/data/cityscapes --workdir=runs/cityscapes_single_segmentation
  python launch/train.py --config=configs/cityscapes.py --config.method=mgda_ub \
      --config.evaluation.baseline_results=runs/cityscapes_single_segmentation,runs/cityscapes_single_instance,runs/cityscapes_single_disparity \
      --data_dir=/data/cityscapes --workdir=runs/cityscapes_mgda_ub

With ImageNet weights for the encoder (a keras.applications ResNet50 "notop" .h5 file), also set
--config.model.encoder_weights=/path/resnet50_notop.h5 --config.data.normalization=caffe.

Initialisation (model.initializer): torch (the default), PyTorch's default, kernels and biases
uniform in +-1/sqrt(fan_in), which Sener's official decoders start from; it also draws the
encoder's random start (the official encoder starts from ImageNet weights instead: see above).
keras gives keras.applications' glorot-uniform kernels and zero biases.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common
from mtl_tf.training.config import base_config

VARIANTS = ("smoke",)


def get_config(arg=None):
    variants = common.parse_variants(arg, VARIANTS)
    config = base_config()
    config.benchmark = "cityscapes"
    config.seed = 0
    config.epochs = 100
    config.batch_size = 8
    config.method = "uniform"
    # Kendall et al.'s softmax likelihood for segmentation, Gaussian for the two regressions.
    config.method_options = ml_collections.ConfigDict(
        {"uncertainty": {"task_types": ("classification", "regression", "regression")}}
    )
    config.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 5e-4})
    config.schedule = ml_collections.ConfigDict(
        {"name": "multistep", "milestones": tuple(range(9, 100, 10)), "factor": 0.85}
    )
    config.data = ml_collections.ConfigDict(
        {
            "data_dir": placeholder(str),
            "image_size": (256, 512),
            "target_size": placeholder(tuple),
            "normalization": "sener",
            "augment": True,
            "max_rotation_degrees": 10.0,
            "flip_probability": 0.5,
            "val_cities": (),
            "check_files": True,
            "eval_batch_size": 8,
            "max_train_examples": placeholder(int),
            "max_eval_examples": placeholder(int),
            "drop_remainder": False,
        }
    )
    config.model = ml_collections.ConfigDict(
        {
            "encoder_weights": placeholder(str),
            "output_stride": 8,
            "batch_norm_momentum": placeholder(float),
            # None: ResNet-50 itself (blocks 3, 4, 6, 3, width 64); smaller only for tests.
            "encoder_blocks": placeholder(tuple),
            "encoder_width": placeholder(int),
            "pool_scales": (1, 2, 3, 6),
            "decoder_channels": 512,
            "dropout_rate": 0.1,
            # Sener's code is PyTorch and its decoders keep PyTorch's default initialisation.
            "initializer": "torch",
        }
    )
    config.evaluation = ml_collections.ConfigDict({"baseline_results": placeholder(object)})
    config.train.tensorboard_update_freq = 50

    if "smoke" in variants:
        config.epochs = 1
        config.batch_size = 2
        config.data.image_size = (128, 256)
        config.data.max_train_examples = 8
        config.data.max_eval_examples = 4
        config.schedule.name = "constant"
        config.grid.divisions = 2
        config.train.tensorboard_update_freq = 1
    return config
