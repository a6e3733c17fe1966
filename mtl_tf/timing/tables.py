"""The benchmark's markdown tables: one of training steps, one of the solver alone."""


def _ms(seconds):
    return "" if seconds is None else f"{1e3 * seconds:.2f}"


def _ratio(value):
    return "" if value is None else f"{value:.3f}"


def _mib(value):
    return "" if value is None else f"{value / 2**20:.1f}"


def step_table(rows):
    """Markdown table of step rows."""
    lines = [
        "| shape | T | batch | method | jit | step ms median [p25, p75] | x uniform | CPU ms median | CPU x uniform "
        "| step memory MiB | memory x uniform | first step s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(
                f"| {r['shape']} | {r['tasks']} | {r['batch_size']} | {r['method']} | {r['jit_compile']} "
                f"| failed: {r['error'][:80]} | | | | | | |"
            )
            continue
        lines.append(
            f"| {r['shape']} | {r['tasks']} | {r['batch_size']} | {r['method']} | {r['jit_compile']} "
            f"| {_ms(r['step_seconds_median'])} [{_ms(r['step_seconds_p25'])}, {_ms(r['step_seconds_p75'])}] "
            f"| {_ratio(r['ratio_to_uniform'])} | {_ms(r['cpu_seconds_median'])} | {_ratio(r['cpu_ratio_to_uniform'])} "
            f"| {_mib(r['peak_memory_bytes'])} | {_ratio(r['memory_ratio_to_uniform'])} "
            f"| {r['first_step_seconds']:.1f} |"
        )
    return "\n".join(lines)


def solver_table(rows):
    """Markdown table of solver rows."""
    lines = [
        "| T | case | dtype | solver | jit | us per solve (median) | iterations median (max) "
        "| max gap / max abs(g)^2 | max gap / optimum |",
        "|---:|---|---|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tasks']} | {r['case']} | {r['dtype']} | {r['solver']} | {r['jit_compile']} "
            f"| {1e6 * r['solve_seconds_median']:.1f} | {r['iterations_median']:.0f} ({r['iterations_max']}) "
            f"| {r['objective_gap_scaled_max']:.1e} | {r['objective_gap_relative_max']:.1e} |"
        )
    return "\n".join(lines)
