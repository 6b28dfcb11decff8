"""meshlib's benchmarks: ``python -m benchmarks.run [--quick] [--only NAME]`` (``make bench``).

Each benchmark is a module ``benchmarks.<name>`` exposing ``run(quick: bool) -> list[dict]``.
A row is a dict with the keys

* ``name`` (str), ``value`` (float, or None when not measured), ``unit`` (str),
* ``target`` (str such as ``">= 0.95x"``, or None) and ``pass`` (bool, or None without a target),

and optionally ``group``/``variant``/``metric`` (the report pivots rows sharing a ``group``
into one table: a line per ``variant``, a column per ``metric``), ``note`` (str) and
``chart`` (bool: plot this row in its group's panel of ``report.png``).
The runner imports whichever modules exist, writes ``benchmarks/results/report.md``,
``report.png`` and ``report.json``, and lists a missing module as "not yet available".
"""

__all__: list[str] = []
