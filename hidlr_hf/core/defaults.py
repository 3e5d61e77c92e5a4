"""The default of every Hi-DLR setting, written once.

The engine (:class:`~hidlr_hf.core.engine.HiDLR`), the rate rule and probe schedule (:mod:`~hidlr_hf.core.rates`),
the grouping and the Trainer's ``--hidlr_*`` flags (:mod:`hidlr_hf.trainer.config`) take their defaults from here.
docs/METHOD.md gives the reason for each value.
"""

DESIGN = "axis"  # probe design: b and diag(A) in 2K + 1 forward passes (section 4)
EVERY = "auto"  # probe every step while calibrating, then within the overhead budget (section 7)
GROUPING = "module_type"  # one group per module type (section 9)

TRUST_REGION = 2.0  # gamma: a round changes a rate by at most this factor (GeN's choice; section 5)
SMOOTHING = 0.1  # tau after calibration (GeN's choice)
CALIBRATION_SMOOTHING = 0.5  # tau during the first CALIBRATION_ROUNDS rounds: a bad starting rate is corrected fast
CALIBRATION_ROUNDS = 10
LR_MIN = 1e-8  # bounds on every base rate
LR_MAX = 1.0

PROBE_SCALE = 1.0  # c: probe at the step about to be taken (section 4.3)
SCALE_GROWTH = 4.0  # c is multiplied by this while a group's signal is lost in rounding noise
MAX_PROBE_SCALE = 256.0
NOISE_TOLERANCE = 1e-6  # relative loss change treated as rounding noise with float32 forwards
NOISE_TOLERANCE_LOW_PRECISION = 1e-3  # ... and with bf16 / fp16 forwards
RANDOM_PROBES = 4  # probes per group of the ``random`` design (the paper's 4K)

OVERHEAD_BUDGET = 0.05  # with EVERY = "auto": probing cost as a fraction of training compute (section 7)
STEP_COST = 3.0  # one training step in probe forward passes: a forward and a backward at equal batch size
