# Charge control: the pure state machine (controller.py) and the relay driver (relay.py).
