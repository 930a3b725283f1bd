"""The engine every job shares: values (``model``), steps, the one process starter
(``proc``), resource locks, the history database, the runner, and atomic file writes."""
