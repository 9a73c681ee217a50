"""Device models: pure functions vectorized per device type, and their registry.

Units and sign conventions (the one place they are stated for all devices):
- power in MW and Mvar, energy in MWh, time in hours (`dt_h`), money in $ (any currency
  unit consistent with the price series, $/MWh), voltages in per unit;
- every device setpoint is an *injection* into its bus: generation positive
  (`p_mw > 0` a generator producing, a battery discharging, PV feeding in), consumption
  negative (a flexible load drawing 1 MW has `p_mw = -1`, a charging battery `p_mw < 0`);
  `q_mvar > 0` injects reactive power (capacitive behaviour);
- the grid's own load/sgen tables keep pandapower's convention (loads consume positive);
  the environment adds device injections to `pgjax.powerflow.bus_injections`, which is
  already generation-positive;
- actions are in [-1, 1] per dimension; each type's `decode` maps them into its feasible
  set (documented in the type's module), so setpoints honour limits by construction;
- `cost` is in $ per step, `safety` is a constraint-violation magnitude >= 0 in the
  physical unit of the constraint (MW, MVA, MWh, positions), 0 when satisfied.

Built-in types: `generator`, `storage`, `pv`, `wind`, `pcc`, `shunt`, `tap_changer`,
`curtailable_load`, `shiftable_load`. Add a type with `register(DeviceType(...))` (see
`pgjax.devices.base`); scenarios then refer to it by name, no core edit needed.
"""

from __future__ import annotations

from pgjax.devices.base import Context, DeviceType, Dispatch, Feature, Field, GridConnection, Setpoint
from pgjax.devices.flexible_load import CURTAILABLE_LOAD, SHIFTABLE_LOAD
from pgjax.devices.generator import GENERATOR
from pgjax.devices.pcc import PCC
from pgjax.devices.renewable import PV, WIND
from pgjax.devices.shunt import SHUNT
from pgjax.devices.storage import STORAGE
from pgjax.devices.tap_changer import TAP_CHANGER
from pgjax.registry import Registry

def _check(device_type: DeviceType) -> None:
    missing = set(device_type.params_cls.__dataclass_fields__) ^ set(device_type.fields)
    if missing:
        raise ValueError(f"device type '{device_type.name}': fields and params_cls differ in {sorted(missing)}")
    if len(device_type.default_action) != device_type.act_dim:
        raise ValueError(f"device type '{device_type.name}': default_action needs {device_type.act_dim} values")
    for what, feats, dim in (("obs_features", device_type.obs_features, device_type.obs_dim),
                             ("act_features", device_type.act_features, device_type.act_dim)):
        if feats and len(feats) != dim:
            raise ValueError(f"device type '{device_type.name}': {what} names {len(feats)} columns, expected {dim}")


REGISTRY = Registry("device type", _check)
register = REGISTRY.register
get = REGISTRY.lookup


for _t in (GENERATOR, STORAGE, PV, WIND, PCC, SHUNT, TAP_CHANGER, CURTAILABLE_LOAD, SHIFTABLE_LOAD):
    register(_t)

__all__ = ["Context", "DeviceType", "Dispatch", "Feature", "Field", "GridConnection", "Setpoint", "REGISTRY", "register", "get"]
