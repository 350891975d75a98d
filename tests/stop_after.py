"""Callbacks that cancel a run after a number of steps, to test kill-and-resume."""


class StopAfter:
    """Cancels the run (runner raises Cancelled, checkpointing) once `n` steps over all stages are done."""

    def __init__(self, n: int):
        self.n = n

    def on_step(self, *args):
        self.n -= 1

    def on_preview(self, *args):
        pass

    def should_stop(self) -> bool:
        return self.n <= 0
