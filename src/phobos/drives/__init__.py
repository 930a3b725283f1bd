"""Off-site drives: which drive is which, unlocking, attaching and releasing, rotation
state, preparing a new drive, and its recovery sheet."""
