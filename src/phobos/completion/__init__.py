"""Shell completion: the command tree read from phobos's argument parser (``tree``) and
one script writer per shell (``bash``, ``zsh``, ``fish``). The scripts know the verbs,
options and choices; for job, host, drive and repository names they ask
``phobos completion --names TABLE`` at completion time."""
