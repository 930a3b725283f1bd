"""The status LED: its state machine, the tracker every phobos process reports to, and the
drivers that show the colour (BlinkStick, file, command)."""
