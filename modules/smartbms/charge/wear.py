# Relay wear: at most 6 switches an hour on average over any 6 hours, whatever the cause.
# A token bucket on the switch-ons only (a stop is always immediate): every switch-on costs
# _ON_COST_S of credit, credit grows by one per device second up to CAP_S. In any 6 h that
# allows at most (CAP_S + 6 h) / _ON_COST_S = 17 switch-ons, so at most 35 switches.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_ON_COST_S = const(1500)
CAP_S = const(4500)  # three switch-ons in a row after a quiet time


class SwitchBudget:
    def __init__(self, credit=CAP_S):
        self.credit = credit if 0 <= credit <= CAP_S else CAP_S

    def tick(self, dt):
        c = self.credit + dt
        self.credit = c if c < CAP_S else CAP_S

    def ok(self):
        return self.credit >= _ON_COST_S

    def spend(self):
        self.credit -= _ON_COST_S

    def wait_s(self):
        return _ON_COST_S - self.credit if self.credit < _ON_COST_S else 0
