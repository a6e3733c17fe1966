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
  smoke   a pipeline check on the real data (16 images, one epoch): not a result.

Run (any method of `mtl_tf.balancers.available()`, `single_task` or `grid`):

  python launch/train.py --config=configs/nyuv2.py --config.method=single_step \
      --data_dir=/data/nyuv2 --workdir=runs/nyuv2_single_step
  python launch/train.py --config=configs/nyuv2.py --config.method=single_task \
      --config.single_task.task=normal --data_dir=/data/nyuv2 --workdir=runs/nyuv2_single_normal
"""

import importlib.util
from pathlib import Path


def _segnet_config():
    # The SegNet setting lives beside this file (configs are plain files, not a package).
    path = Path(__file__).with_name("cityscapes_segnet.py")
    spec = importlib.util.spec_from_file_location("_mtl_tf_cityscapes_segnet_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    module = _segnet_config()
    return module.segnet_config(
        "nyuv2_segnet", (288, 384), 2, ("classification", "regression", "regression"), module._variants(arg)
    )
