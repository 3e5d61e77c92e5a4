"""Train the tiny model; with --kill_at_step N the process SIGKILLs itself right after optimizer step N."""

import os
import signal
import sys

sys.argv.insert(1, "--disable_tqdm")
sys.argv.insert(2, "true")
kill_at = None
if "--kill_at_step" in sys.argv:
    i = sys.argv.index("--kill_at_step")
    kill_at = int(sys.argv[i + 1])
    del sys.argv[i : i + 2]

from transformers import TrainerCallback  # noqa: E402

import hidlr_hf.trainer as trainer_module  # noqa: E402


class Killer(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if kill_at is not None and state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


_init = trainer_module.HiDLRTrainer.__init__


def _with_killer(self, *a, **k):
    _init(self, *a, **k)
    self.add_callback(Killer())


trainer_module.HiDLRTrainer.__init__ = _with_killer
sys.path.insert(0, os.path.dirname(__file__))
import train_tiny  # noqa: E402

train_tiny.main()
