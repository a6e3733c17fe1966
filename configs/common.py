"""What every config shares: the one parser of the variant in `--config=path:variant`.

A config's `get_config(arg)` receives what follows the colon; `parse_variants` turns
"sener,smoke" (or "sener+smoke") into {"sener", "smoke"}, refusing a name the config does
not know and two variants that exclude each other (two protocols, say).
"""


def parse_variants(arg, known, *, one_of=None) -> set[str]:
    """The variants named in `arg` (comma- or plus-separated; None or "" names none).

    Args:
      arg: what follows the colon of `--config=path:arg`.
      known: every variant the config has.
      one_of: optional {kind: (variant, ...)}: at most one variant of each group, e.g.
        {"protocol": ("sener", "pareto")}.

    Raises:
      ValueError: naming the unknown variants and the known ones, or the clashing group.
    """
    names = [n.strip() for n in str(arg or "").replace("+", ",").split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown config variant(s) {unknown}; expected a comma-separated subset of {list(known)} "
            "(an unknown variant is an error, not ignored)"
        )
    for kind, group in (one_of or {}).items():
        if sum(n in names for n in group) > 1:
            raise ValueError(f"choose one {kind} variant: {' or '.join(repr(n) for n in group)}")
    return set(names)
