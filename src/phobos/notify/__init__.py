"""Notifiers: the LED, e-mail, apprise and pings. A notifier failure never hides a job's result."""
