"""The configuration file: ``load`` (TOML into a validated Config), ``model`` (the whole
Config), ``tables`` and ``job`` (the dataclass of each table), ``checks`` (value checks),
``schema`` (how settings are declared and built), ``show`` and ``reference`` (printing)."""
