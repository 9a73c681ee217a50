"""One deployed day next to the simulated one (`pgjax hil --compare EXPORT_DIR --plot day.png`)."""

from __future__ import annotations

import io

import numpy as np

from pgjax.runio import write_atomic


def compare_rows(env, deployed: list[dict], simulated: list[dict]) -> dict:
    """Largest differences of actions and voltages, and both days' costs (rows of `Plant.rows` / `simulate_day`)."""
    n = min(len(deployed), len(simulated))
    act = np.array([r["actions"] for r in deployed[:n]]) - np.array([r["actions"] for r in simulated[:n]])
    vm = np.array([r["vm_pu"] for r in deployed[:n]]) - np.array([r["vm_pu"] for r in simulated[:n]])
    cost = [sum(r["info"]["cost_total"] for r in rows[:n]) for rows in (deployed, simulated)]
    return {"steps": n, "max_action_diff": float(np.abs(act).max()) if n else None,
            "max_vm_diff_pu": float(np.abs(vm).max()) if n else None,
            "cost_deployed": cost[0], "cost_simulated": cost[1]}


def plot_day(env, deployed: list[dict], simulated: list[dict], png_path, title: str = "") -> None:
    """Storage and generator power commands per agent, bus voltage range and cost per step, both days."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dt = float(env.scenario.dt_h)
    cols = [(a, c) for a, cc in enumerate(env.layout.action.columns) for c in cc
            if c.kind in ("storage", "generator") and c.name == "p_mw"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    for rows, style, label in ((simulated, "--", "simulated"), (deployed, "-", "deployed (Modbus)")):
        hours = np.arange(len(rows)) * dt
        acts = np.array([r["actions"] for r in rows])
        for k, (a, c) in enumerate(cols):
            axes[0].step(hours, acts[:, a, c.column], where="post", ls=style, color=f"C{k}",
                         label=f"{c.target} ({label})" if style == "-" else None)
        vm = np.array([r["vm_pu"] for r in rows])
        vm = np.where(vm > 0, vm, np.nan)  # de-energized buses / padding
        axes[1].step(hours, np.nanmin(vm, 1), where="post", ls=style, color="C0", label=f"min ({label})")
        axes[1].step(hours, np.nanmax(vm, 1), where="post", ls=style, color="C3", label=f"max ({label})")
        axes[2].step(hours, [r["info"]["cost_total"] for r in rows], where="post", ls=style, color="k", label=label)
    axes[0].set_ylabel("P command [-1, 1]")
    axes[0].legend(fontsize=7, ncol=2, loc="upper left")
    axes[1].set_ylabel("bus voltage p.u.")
    axes[1].legend(fontsize=7, ncol=2)
    axes[2].set_ylabel("cost $ per step")
    axes[2].set_xlabel("hour of the day")
    axes[2].legend(fontsize=7)
    fig.suptitle(title or f"{env.name}: deployed over Modbus TCP (solid) vs simulated (dashed)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(png_path, buf.getvalue())
