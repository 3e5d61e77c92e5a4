"""The default of every Hi-DLR setting, written once.

The engine (:class:`~hidlr_hf.core.engine.HiDLR`), the rate rule and probe schedule (:mod:`~hidlr_hf.core.rates`),
the grouping and the Trainer's ``--hidlr_*`` flags (:mod:`hidlr_hf.trainer.config`) take their defaults from here.
docs/METHOD.md gives the reason for each value.
"""

DESIGN = "axis"  # probe design: b and diag(A) in 2K + 1 forward passes (section 4)
EVERY = "auto"  # probe every step while calibrating, then within the overhead budget (section 7)
GROUPING = "module_type"  # one group per module type (section 9)

HORIZON = 32.0  # rates are the one-step optimum b / A divided by this (section 5.2)
BODY_HORIZON = 128.0  # ... for the pretrained body of a model with a task head (section 5.2)
RATIO_LIMIT = 4.0  # each body group's rate within this factor of the geometric mean of their rates (section 5.3)
SADDLE_FREE = True  # a negative curvature along a group's step counts at its magnitude (section 5.1)
NOISE_HOLD = 1.0  # steady rounds keep a rate whose mean slope is within this many standard errors of 0 (5.4)
SMOOTHING = 0.1  # weight of the newest round in the running means of b and A (section 5.1)
TRUST_REGION = 2.0  # gamma: after calibration a round changes a rate by at most this factor (GeN's choice)
CALIBRATION_ROUNDS = 6  # the most rounds of calibration (section 5.4)
HEAD_PHASE = 0.06  # the task head trains alone for this fraction of the steps first (section 5.4)
JUMP_LIMIT = 100.0  # the largest change of one verified jump during calibration
VERIFY_RATIO = 0.5  # a jump is kept when the loss drops by at least this fraction of the predicted decrease
LR_MIN = 1e-8  # bounds on every base rate
LR_MAX = 1.0

PROBE_SCALE = 1.0  # c: probe at the step about to be taken (section 4.3)
SCALE_GROWTH = 4.0  # c is multiplied by this while a group's signal is lost in rounding noise
MAX_PROBE_SCALE = 256.0
NOISE_TOLERANCE = 1e-6  # relative loss change treated as rounding noise with float32 forwards
NOISE_TOLERANCE_LOW_PRECISION = 1e-3  # ... and with bf16 / fp16 forwards
RANDOM_PROBES = 4  # probes per group of the ``random`` design (the paper's 4K)

OVERHEAD_BUDGET = 0.02  # with EVERY = "auto": probing cost as a fraction of training compute (section 7)
STEP_COST = 3.0  # one training step in probe forward passes: a forward and a backward at equal batch size
