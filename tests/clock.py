"""An injectable clock, so that no test sleeps to see time pass."""


class FakeClock:
    """A ``time.time``-like callable whose time moves only when told to."""

    def __init__(self, now: float = 1_790_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
