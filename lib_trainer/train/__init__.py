"""The training loop and what it is made of: noise, losses, optimizers, schedules, saving."""
