"""systemd ``OnCalendar=`` expressions, exactly as systemd 252 reads them: parsing, the normalized
form, next elapses, and ``systemd-analyze calendar``'s layout."""
