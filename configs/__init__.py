"""Experiment configs: one file per benchmark set-up, each with `get_config(arg=None)`.

`--config=configs/<file>.py[:variant]` loads one (launch scripts, `mtl_tf.training.config.load`);
`configs/common.py` is what they share.
"""
