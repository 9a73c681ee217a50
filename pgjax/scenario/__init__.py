"""Scenarios: YAML files validated with clear errors, a registry of named versions, and the
compiler that turns one into the arrays the environment steps on.

A scenario file (see `pgjax/scenarios/*.yaml` for complete examples)::

    name: multi_microgrid            # required
    version: 0
    network: ieee34_3x_ieee13        # shipped name | pandapower.networks builder | .json path
                                     # | {builder: name, kwargs: {...}}
    dtype: float32                   # the default; float64 needs JAX's 64-bit mode (pgjax.precision)
    powerflow: {method: newton, jacobian: exact, max_iter: 20}
    time: {dt_h: 1.0, episode_steps: 24, start: day}   # start: day | any | <step index>
    profiles:
      train: caiso_2023              # shipped dataset (pgjax.profiles) or a CSV path (relative
                                     # to this file); for a CSV: time_column: time (the step and
                                     # the first hour from its stamps) or data_dt_h: 0.25; with
                                     # neither, one row per scenario step
      test: caiso_2024
      split: train                   # which one the episodes draw from
      price: price_0096WD_7_N001     # $/MWh column (or a number: a flat price)
      loads: [{match: "MG1 *", series: load_PGE}, {match: "*", series: "load_CA ISO-TAC"}]
      sgens: []                      # same, for the network's static generators
      load_scale: 1.0
      resample: repeat               # repeat | linear, when dt_h differs from the data
    limits: {vm_min_pu: 0.95, vm_max_pu: 1.05, loading_max_percent: 100}
    reward: {penalty: 100.0, shared: false, scale: 1.0}
    observation: {centralized: false}
    hierarchy: {learned: grid}       # system | grid | device
    protocol: {vertical: none, horizontal: none}   # see pgjax.protocols.coordination
    communication: {msg_delay: 0, loss_prob: 0.0, tick_interval: 1}
    agents:
      - id: DSO
        level: system
        buses: ["DSO *"]             # bus names (fnmatch patterns) or net bus indices
        devices:
          - {type: tap_changer, name: reg1, branch: {trafo: "DSO Regulator1"}}
      - id: MG1
        level: grid
        parent: DSO
        buses: ["MG1 *"]
        devices:
          - {type: storage, name: mg1_ess, bus: "MG1 Bus 645", e_max_mwh: 2.0, ...}

`load(name_or_path)` returns the raw mapping, `validate(raw)` every problem found (key
path, expected, actual), `compile_scenario(raw, **overrides)` a `Compiled` record that
`pgjax.env.Env` wraps. `pgjax validate FILE` prints every problem of a file. Every number
has a range (`pgjax.scenario.schema`, device types' `validate` hooks), files are read with
bounds (`pgjax.scenario.registry`), and a network or CSV file's problems name the file
and its table / row / column (see the README's "Validating inputs").

The package: `registry` (named versions, the loader, the shipped scenarios), `schema`
(validation, overrides), `specs` (the typed `protocol`, `communication` and `profiles`
sections on `Compiled`), `compile` (the compiler) and `builders` (generated scenarios such as
`multi_microgrid_large`). Device types check and complete their own entries through the
`validate` and `complete` hooks of `pgjax.devices.base.DeviceType`. The hour of day of a
profile's first step is `pgjax.profiles.start_hour`.
"""

from pgjax.scenario.registry import REGISTRY, SCENARIO_DIR, builder_of, load, names, register, resolve_name
from pgjax.scenario.schema import (
    AGENT_LEVELS,
    LEVELS,
    OVERRIDE_PATHS,
    TOP_KEYS,
    Problem,
    ScenarioError,
    apply_overrides,
    validate_structure,
)
from pgjax.scenario.specs import CommunicationSpec, ProfileSpec, ProtocolSpec
from pgjax.scenario.compile import Compiled, DeviceGroup, Network, compile_scenario, validate  # noqa: I001
from pgjax.scenario import builders  # noqa: F401,E402  (registers the generated scenarios)

__all__ = [
    "AGENT_LEVELS", "LEVELS", "OVERRIDE_PATHS", "REGISTRY", "SCENARIO_DIR", "TOP_KEYS", "CommunicationSpec", "Compiled",
    "DeviceGroup", "Network", "Problem", "ProfileSpec", "ProtocolSpec", "ScenarioError", "apply_overrides",
    "builder_of", "compile_scenario", "load", "names", "register", "resolve_name", "validate", "validate_structure",
]
