"""What every balancing method costs per training step, and the min-norm solver alone.

Speed is half of MGDA-UB's claim (Sener & Koltun, "Multi-Task Learning as
Multi-Objective Optimization", NeurIPS 2018, section 3.3 and Table 2: one
forward pass and one encoder backward pass, so a step costs about what uniform
scaling costs, against T encoder backward passes for exact MGDA). This package
turns that claim into numbers measured in one process; `launch/benchmark.py`
is its command line. (`mtl_tf.benchmarks` is another thing: the training
set-ups of the papers' data sets.)

  shapes      the model shapes timed, method labels (`name:key=value`) and
              the compiled model of one shape and one method;
  steps       memory meters and the timing of training steps (`benchmark_steps`);
  solver      the min-norm solver alone (`benchmark_solver`);
  reference   the exact float64 min-norm QP solution the solver is compared
              with (also the solver tests' reference);
  tables      the markdown tables of both.

Nothing is imported here, so that `mtl_tf.timing.reference` stays NumPy and
scipy only; import the modules themselves.
"""
