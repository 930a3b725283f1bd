"""``phobos doctor``: the vocabulary of findings (``findings``), one module per check area,
and the collector that runs them (``collect``)."""
