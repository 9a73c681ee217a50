"""Measuring pgjax against its peers: the pieces the `pgjax bench ...` commands share.

- `pgjax.perf.timing`: steady-state call rates, single-threaded native libraries, machine info;
- `pgjax.perf.points`: operating points every engine sees identically (pgjax, pandapower);
- `pgjax.perf.lightsim`: lightsim2grid's batch power flow as a peer engine;
- `pgjax.perf.flops`: flops of a jitted call from XLA's cost analysis, loops counted per trip;
- `pgjax.perf.peaks`: the machine's measured GEMM peak and its nominal FMA peak;
- `pgjax.perf.feeders`: seeded random radial feeders (`radial300`, `radial1000`).

Nothing here changes a solver; engines are only timed and compared.
"""
