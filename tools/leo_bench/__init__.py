"""tools/bench as modules: ``flops`` (analytic FLOP counts of traced graphs), ``floor``
(timing, the machine's matmul rate, the lower bound of a step), ``targets`` (the four
measured targets, through leo_tf's public functions), ``report`` and ``cli``."""
