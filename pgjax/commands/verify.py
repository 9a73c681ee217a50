"""Compare pgjax's power flow (float64) with pandapower's runpp on a zoo of networks.

    pgjax verify [--quick | --networks NAME,...] [--methods newton,fixed_point] [--csv PATH]
    pgjax verify --three-phase [--networks FEEDER,...] [--float32] [--csv PATH]

The zoo: every builder in `pandapower.networks` without required arguments whose net has
at most `--max-buses` buses and converges in pandapower, plus case1354pegase, CIGRE
networks with DER, mv_oberrhein and Dickert variants, a few SimBench grids and pgjax's
shipped networks. `--quick` runs six small networks (for CI), `--networks` the ones named
(`pandapower.networks` builders or pgjax's shipped networks). The comparison, options of
the reference run and targets are `pgjax.verification`'s, the ones the tests use.

Rows: one per network and method; "branches" counts the grid's branch rows (a three-winding
transformer is three, bus-bus switches with an impedance count). newton and fixed_point (exact AC) PASS when pgjax
converged and every difference is within `pgjax.verification.TARGETS`; distflow and
lindistflow rows are informational ("approx"). Networks pgjax cannot convert are
"unsupported" rows. Networks found by looking through `pandapower.networks` that cannot be
built, are too large or do not converge in pandapower are listed in the footer as skipped
(unsupported ones are listed exceptions); a network the zoo names itself (`--quick`,
`--networks`, the additions listed above) that does not run (build failed or timed out,
pandapower did not converge, unsupported) is a failure, listed as "not run".

`--three-phase` compares the three-phase power flow with OpenDSS instead, on every shipped
OpenDSS feeder (`pgjax.verification3ph.FEEDERS`, or the ones `--networks` names): regulator
taps pinned where OpenDSS's controls leave them, loads kept at their model, OpenDSS at
tolerance 1e-10; per-node |V| and angle, conductor currents, losses and source power against
`pgjax.verification3ph.TARGETS` (float64; `--float32` solves in float32 and reports only).
With the European LV feeder, pandapower's `runpp_3ph` on it is compared with OpenDSS and
pgjax too (`pgjax.verification3ph_pandapower`; printed, not judged).

Exit code 0 when every newton/fixed_point row passes and every named network ran, 1
otherwise (2 for an unknown method or network name).
Building nets and running pandapower happens in one worker process (`--jobs 1`, default)
while the main process solves with pgjax; `--jobs 0` does everything in-process.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import inspect
import multiprocessing
import re
import sys
import time
import warnings

from pgjax import verification as V

# Builders of pandapower.networks whose size is known to exceed 300 buses (not built, to save
# time); case<N>... builders are judged by the bus count in their name.
KNOWN_LARGE = {
    "GBnetwork": 2224, "lv_schutterwald": 2940, "ieee_european_lv_asymmetric": 907,
    "kb_extrem_vorstadtnetz_trafo_1": 384, "kb_extrem_vorstadtnetz_trafo_2": 386,
}
SIMBENCH_CODES = ("1-LV-rural1--0-sw", "1-LV-semiurb4--0-sw", "1-MV-rural--0-sw", "1-MV-urban--0-sw",
                  "1-HV-mixed--0-sw")
DICKERT_VARIANTS = (("middle", "cable", "multiple", "average"), ("long", "C&OHL", "multiple", "bad"),
                    ("long", "cable", "multiple", "good"))
QUICK = ("case9", "case30", "case33bw", "create_cigre_network_mv", "create_kerber_landnetz_kabel_1", "ieee13")
TIMEOUT_S = 120.0  # per build and per pandapower run


def _pn_builders():
    """Public functions of pandapower.networks that take no required argument, by name."""
    import pandapower.networks as pn

    out = {}
    for name in sorted(dir(pn)):
        obj = getattr(pn, name)
        if name.startswith("_") or not inspect.isfunction(obj) or not obj.__module__.startswith("pandapower.networks"):
            continue
        params = inspect.signature(obj).parameters.values()
        if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            continue
        out[name] = obj
    return out


def _size_by_name(name: str) -> int | None:
    """Bus count encoded in a test-case name (case1354pegase -> 1354), or a known size."""
    if name in KNOWN_LARGE:
        return KNOWN_LARGE[name]
    m = re.fullmatch(r"case_?(?:ACTIVSg|illinois)?(\d+)[a-z_]*", name)
    return int(m.group(1)) if m else None


def zoo(max_buses: int):
    """`(entries, pre_skipped)`: entries are (label, picklable builder, bus limit or None,
    named); `named` entries (all but the builders found in `pandapower.networks`) must run."""
    import pandapower.networks as pn
    import simbench

    from pgjax import networks

    entries, skipped = [], []
    for name, fn in _pn_builders().items():
        size = _size_by_name(name)
        if name == "case1354pegase":
            continue  # added below without a size limit
        if size is not None and size > max_buses:
            how = "known size" if name in KNOWN_LARGE else "by name"
            skipped.append((name, f"{size} buses > {max_buses} ({how}, not built)"))
            continue
        entries.append((name, fn, max_buses, False))
    entries.append(("case1354pegase", pn.case1354pegase, None, True))
    for der in ("pv_wind", "all"):
        entries.append((f"create_cigre_network_mv(with_der={der!r})",
                        functools.partial(pn.create_cigre_network_mv, with_der=der), None, True))
    entries.append(("mv_oberrhein(scenario='generation')", functools.partial(pn.mv_oberrhein, scenario="generation"),
                    None, True))
    for fr, lt, cu, ca in DICKERT_VARIANTS:
        entries.append((f"dickert({fr},{lt},{cu},{ca})", functools.partial(
            pn.create_dickert_lv_network, feeders_range=fr, linetype=lt, customer=cu, case=ca), None, True))
    for code in SIMBENCH_CODES:
        entries.append((f"simbench {code}", functools.partial(simbench.get_simbench_net, code), None, True))
    return entries + named_zoo(networks.names()), skipped


def named_zoo(names) -> list:
    """Entries (label, builder, None, True) for `pandapower.networks` builder names and pgjax's
    shipped network names; raises `ValueError` naming every name that is neither."""
    from pgjax import networks

    builders = _pn_builders()
    unknown = [n for n in names if n not in builders and n not in networks.names()]
    if unknown:
        raise ValueError(f"unknown network(s) {unknown}: neither a pandapower.networks builder without "
                         f"required arguments nor one of pgjax's networks {networks.names()}")
    return [(name, builders[name], None, True) if name in builders
            else (f"pgjax {name}", functools.partial(networks.load, name), None, True) for name in names]


def quick_zoo():
    """`(entries, [])`: a handful of fast networks (`QUICK`): meshed with PV buses, radial feeders, a shipped one."""
    return named_zoo(QUICK), []


COLUMNS = (("network", 38, "<"), ("buses", 5, ">"), ("branches", 8, ">"), ("method", 11, "<"),
           ("conv pgjax/pp", 13, "<"), ("it", 3, ">"), ("max|dvm| pu", 11, ">"), ("max|dva| deg", 12, ">"),
           ("max|dP_br| MW", 13, ">"), ("max|dP_sl| MW", 13, ">"), ("result", 0, "<"))


def _fmt_row(values) -> str:
    cells = []
    for (_, width, align), v in zip(COLUMNS, values):
        v = "" if v is None else str(v)
        if width and len(v) > width:
            v = v[:width - 1] + "~"
        cells.append(f"{v:{align}{width}}" if width else v)
    return "  ".join(cells)


def _e(x) -> str:
    return f"{x:.1e}"


def _applicable(grid, method) -> str | None:
    """None if `method` applies to `grid`, else the reason (check_method's ValueError)."""
    from pgjax.powerflow import check_method

    try:
        check_method(grid, method)
        return None
    except ValueError as exc:
        return str(exc)


def run_case(label, case, methods, emit) -> list[dict]:
    """Rows (dicts) for one prepared case; `emit(row)` prints each as it is ready."""
    rows = []
    n_bus = case.get("n_bus")
    if case["status"] in ("unsupported", "error"):
        row = {"network": label, "n_bus": n_bus, "n_branch": None, "method": "-",
               "status": case["status"], "detail": case["reason"]}
        rows.append(row)
        emit(row)
        return rows
    grid, netmap = case["converted"]
    for method in methods:
        row = {"network": label, "n_bus": n_bus, "n_branch": grid.n_branch, "method": method}
        reason = _applicable(grid, method)
        if reason is not None:
            if method in V.EXACT_METHODS and method != "newton":
                continue  # e.g. fixed_point on a grid with PV buses: not run, by design
            row.update(status="n/a", detail=reason)
        else:
            try:
                with warnings.catch_warnings():
                    V.suppress_warnings()
                    errors = V.compare(case["net"], method, reference=case["reference"], converted=(grid, netmap))
                row.update(errors)
                if method in V.APPROX_METHODS:
                    row.update(status="approx", detail="")
                else:
                    failed = V.failures(errors)
                    row.update(status="PASS" if not failed else "FAIL", detail="; ".join(failed))
            except Exception as exc:  # noqa: BLE001 - a crash is a finding, reported as a row
                row.update(status="error", detail=f"{type(exc).__name__}: {V._short(exc, 200)}")
        rows.append(row)
        emit(row)
    return rows


def _row_text(row) -> str:
    if "dvm_pu" in row:
        values = (row["network"], row["n_bus"], row["n_branch"], row["method"],
                  f"{'yes' if row['converged'] else 'NO'}/yes", row["iterations"], _e(row["dvm_pu"]),
                  _e(row["dva_deg"]), _e(row["dp_branch_mw"]), _e(row["dp_slack_mw"]),
                  row["status"] + (f" ({row['detail']})" if row.get("detail") else ""))
    else:
        text = f"{row['status']}: {row['detail']}"
        values = (row["network"], row["n_bus"], row["n_branch"], row["method"], "", "", "", "", "", "", text)
    return _fmt_row(values)


def _row_ok(row) -> bool:
    """Counts toward exit code 0: passed, unsupported (listed exception) or informational."""
    if row["status"] in ("PASS", "unsupported", "approx"):
        return True
    # approximations that are not available or do not apply are informational too
    return row["status"] in ("n/a", "error") and row["method"] in V.APPROX_METHODS


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax verify` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax verify", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="six fast networks (CI)")
    parser.add_argument("--networks", metavar="NAMES",
                        help="comma-separated network names instead of the zoo (pandapower.networks builders, "
                             "pgjax's shipped networks)")
    parser.add_argument("--methods", default="newton,fixed_point",
                        help="comma-separated pgjax methods (default newton,fixed_point; "
                             "fixed_point runs only where it applies)")
    parser.add_argument("--csv", metavar="PATH", help="also write every row (with worst elements) to a CSV file")
    parser.add_argument("--max-buses", type=int, default=300,
                        help="size limit for pandapower.networks builders (default 300)")
    parser.add_argument("--jobs", type=int, default=1, choices=(0, 1),
                        help="1: build nets and run pandapower in a worker process (default); 0: in-process")
    parser.add_argument("--three-phase", action="store_true",
                        help="the three-phase power flow against OpenDSS on the shipped OpenDSS feeders")
    parser.add_argument("--float32", action="store_true",
                        help="with --three-phase: solve in float32 (reported, not judged against the targets)")
    return parser


THREE_PHASE_COLUMNS = (("feeder", 12), ("nodes", 6), ("conv", 5), ("iter", 5), ("|dV| pu", 9), ("dangle deg", 10),
                       ("dI rel", 9), ("loss rel", 9), ("source rel", 10), ("worst node", 20), ("status", 0))


def _fmt_3ph(values) -> str:
    return "  ".join(f"{str(v):<{w}}" if w else str(v) for (_, w), v in zip(THREE_PHASE_COLUMNS, values))


def run_three_phase(args) -> int:
    """`pgjax verify --three-phase`: every feeder against OpenDSS; 1 if a float64 row fails."""
    from pgjax import verification3ph as V3

    names = [n.strip() for n in args.networks.split(",") if n.strip()] if args.networks else list(V3.FEEDERS)
    unknown = [n for n in names if n not in V3.FEEDERS]
    if unknown:
        build_parser().error(f"unknown feeders {unknown}; choose from {list(V3.FEEDERS)}")
    dtype = "float32" if args.float32 else "float64"
    print(f"pgjax three-phase power flow vs OpenDSS (tolerance 1e-10, taps pinned), {dtype}; targets: "
          + ", ".join(f"{k} <= {v:g}" for k, v in V3.TARGETS.items()))
    print(_fmt_3ph([c for c, _ in THREE_PHASE_COLUMNS]))
    rows = []
    for name in names:
        t0 = time.perf_counter()
        row = V3.compare(name, dtype)
        row["status"] = ("PASS" if row["passed"] else "FAIL") if dtype == "float64" else "info"
        row["solve_s"] = time.perf_counter() - t0
        rows.append(row)
        print(_fmt_3ph((name, row["nodes"], "yes" if row["converged"] else "NO", row["iterations"],
                        *(_e(row[k]) for k in ("dvm_pu", "dva_deg", "di_rel", "loss_rel", "source_rel")),
                        row["worst_node"], row["status"])), flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if "european_lv" in names and dtype == "float64":
        from pgjax import verification3ph_pandapower as VPP

        pp_row = VPP.compare("european_lv")
        print(f"\npandapower runpp_3ph (sequence networks; source as a stiff ext_grid behind its impedance) on "
              f"european_lv: converged {pp_row['converged']}; vs OpenDSS |dV| {_e(pp_row['dvm_pu_opendss'])} pu, "
              f"angle {_e(pp_row['dva_deg_opendss'])} deg; vs pgjax |dV| {_e(pp_row['dvm_pu_pgjax'])} pu, "
              f"angle {_e(pp_row['dva_deg_pgjax'])} deg")
    failed = [r["feeder"] for r in rows if r["status"] == "FAIL"]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} feeders " + ("pass" if dtype == "float64" else "solved")
          + (f"; failing: {failed}" if failed else ""))
    return 1 if failed else 0


def run(args) -> int:
    """Compare as `args` say (parsed by `build_parser`); 1 if a row fails or a named network did not run."""
    import jax

    jax.config.update("jax_enable_x64", True)  # a program comparing in float64
    if args.three_phase:
        return run_three_phase(args)
    from pgjax.powerflow import METHODS

    parser = build_parser()  # usage errors found while running
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {METHODS}")
    t_start = time.perf_counter()
    warnings.filterwarnings("ignore", message=".*numba.*")
    V.suppress_warnings()
    try:
        if args.networks:
            entries, skipped = named_zoo([n.strip() for n in args.networks.split(",") if n.strip()]), []
        else:
            entries, skipped = quick_zoo() if args.quick else zoo(args.max_buses)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"pgjax vs pandapower runpp (tolerance_mva {V.REFERENCE_TOLERANCES_MVA[0]:g}), float64; targets for "
          f"{'/'.join(V.EXACT_METHODS)}: " + ", ".join(f"{k} <= {v:g}" for k, v in V.TARGETS.items())
          + " (columns: P; a FAIL names the difference and element)")
    header = _fmt_row([c[0] for c in COLUMNS])
    print(header)
    print("-" * len(header))
    sys.stdout.flush()
    rows, not_run = run_entries(entries, skipped, methods, args.jobs)
    bad = [r for r in rows if not _row_ok(r)]
    print_tally(rows, bad, skipped, not_run)
    print(f"total wall time {time.perf_counter() - t_start:.1f} s")
    if args.csv:
        write_csv(args.csv, rows, skipped, not_run)
    return 1 if bad or not_run else 0


def run_entries(entries, skipped: list, methods, jobs: int):
    """Every zoo entry prepared (in a worker process with `jobs`) and compared, rows printed as they
    come: `(rows, not_run)`; skipped zoo networks are appended to `skipped`, named networks that did
    not run are `not_run` (`(label, reason)`)."""
    def emit(row):
        print(_row_text(row), flush=True)

    rows, not_run, executor = [], [], None
    if jobs:
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        futures = [executor.submit(V.prepare_case, build, max_buses=limit, timeout_s=TIMEOUT_S)
                   for _, build, limit, _ in entries]
        cases = (f.result() for f in futures)
    else:
        cases = (V.prepare_case(build, max_buses=limit, timeout_s=TIMEOUT_S) for _, build, limit, _ in entries)
    try:
        for (label, _, _, named), case in zip(entries, cases):
            if named and case["status"] in ("skipped", "unsupported"):
                not_run.append((label, case["reason"]))
            if case["status"] == "skipped":
                if named:
                    print(_fmt_row((label, case["n_bus"], None, "-", *[""] * 6, f"NOT RUN: {case['reason']}")),
                          flush=True)
                else:
                    skipped.append((label, case["reason"]))
                continue
            rows += run_case(label, case, methods, emit)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return rows, not_run


def print_tally(rows, bad, skipped, not_run) -> None:
    """Counts by status, the skipped and not-run networks, the rows failing targets."""
    if skipped:
        print(f"\nskipped ({len(skipped)}):")
        for label, reason in skipped:
            print(f"  {label}: {reason}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("PASS", "FAIL", "error", "unsupported", "approx", "n/a")}
    tally = [", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no rows", f"{len(skipped)} skipped"]
    print("\n" + "; ".join(tally + ([f"{len(not_run)} NOT RUN"] if not_run else [])))
    if not_run:
        print(f"named networks that did not run ({len(not_run)}):")
        for label, reason in not_run:
            print(f"  {label}: {reason}")
    if bad:
        print("rows failing targets:")
        for r in bad:
            print(f"  {r['network']} [{r['method']}]: {r['status']} {r.get('detail', '')}")


def write_csv(path, rows, skipped, not_run) -> None:
    """Every row (with worst elements), then the skipped and not-run networks, to a CSV file."""
    fields = ["network", "n_bus", "n_branch", "method", "status", "detail", "converged", "iterations",
              "reference_tol_mva", *(f for k in V.TARGETS for f in (k, f"where_{k}")), "solve_s"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        for label, reason in skipped:
            writer.writerow({"network": label, "status": "skipped", "detail": reason})
        for label, reason in not_run:
            writer.writerow({"network": label, "status": "not run", "detail": reason})


def main(argv: list[str] | None = None) -> int:
    """`pgjax verify` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
