"""Register codecs (against pymodbus's own conversions) and the device map (generation, validation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymodbus.client.mixin import ModbusClientMixin

from pgjax.deploy import registers
from pgjax.deploy.device_map import Setpoint, load_map, map_for_env, parse_map, write_map
from pgjax.errors import DataError
from deploy_fixtures import env, export_dir, loop, run_dir  # noqa: F401 (the deployment tests' fixtures)

PYMODBUS = {"int16": ModbusClientMixin.DATATYPE.INT16, "uint16": ModbusClientMixin.DATATYPE.UINT16,
            "int32": ModbusClientMixin.DATATYPE.INT32, "float32": ModbusClientMixin.DATATYPE.FLOAT32}


@pytest.mark.parametrize("dtype,sf,value", [("int16", -4, -1.2345), ("int16", -2, 99.99), ("uint16", 0, 65534.0),
                                            ("int32", -3, -123456.789), ("float32", 0, 1.0e-3),
                                            ("float32", 0, -8.5e5)])
def test_codec_matches_pymodbus(dtype, sf, value):
    regs = registers.encode(value, dtype, sf)
    raw = ModbusClientMixin.convert_from_registers(regs, PYMODBUS[dtype], word_order="big")
    assert registers.decode(regs, dtype, sf) == pytest.approx(raw * 10.0**sf, rel=1e-12)
    assert ModbusClientMixin.convert_to_registers(raw, PYMODBUS[dtype], word_order="big") == regs
    step = 10.0**sf if dtype != "float32" else abs(value) * 2**-23
    assert abs(registers.decode(regs, dtype, sf) - value) <= step / 2 * (1 + 1e-9)


def test_not_implemented_values_read_as_nan():
    assert registers.encode(math.nan, "int16") == [0x8000]
    assert registers.encode(math.nan, "uint16") == [0xFFFF]
    assert registers.encode(math.nan, "int32") == [0x8000, 0]
    for dtype in registers.DTYPES:
        assert math.isnan(registers.decode(registers.encode(math.nan, dtype, -2), dtype, -2))
    with pytest.raises(ValueError, match="does not fit"):
        registers.encode(3.3, "int16", -4)


def test_bounded_never_leaves_the_limits():
    sp = Setpoint("x", 0, "int16", -2, min=-33.333, max=66.667)
    for v in np.linspace(-200, 200, 4001):
        b = registers.bounded(float(v), sp)
        assert -33.333 <= b <= 66.667
        assert registers.quantize(b, "int16", -2) == b


def test_generated_map_covers_every_agent(env, tmp_path):
    write_map(tmp_path / "map.yaml", map_for_env(env, port=5099))
    dmap = load_map(tmp_path / "map.yaml")
    assert dmap.port == 5099 and dmap.unit("site").unit_id == 1
    assert len({u.unit_id for u in dmap.units}) == len(dmap.units)
    schema = env.layout
    for a in range(schema.num_agents):
        for f in schema.observation.agent_features(a):
            unit, m = dmap.measurement(f.key)
            assert m.unit == f.unit
        for c in schema.action.columns[a]:
            unit, s = dmap.setpoint(c.key)
            assert unit.name == c.target and s.default == env.default_actions[a, c.column]
    ess = dmap.unit("mg1_ess")
    assert {s.safe for s in ess.setpoints} == {"default"} and ess.reversion_s == 5.0
    assert {s.safe for s in dmap.unit("mg1_dg").setpoints} == {"hold"}


def test_validation_names_key_paths(env):
    data = map_for_env(env)
    dev = data["devices"]
    dev["mg1_ess"]["unit_id"] = 1
    dev["mg1_ess"]["setpoints"][0]["max"] = 300.0
    dev["mg1_ess"]["setpoints"][1]["address"] = dev["mg1_ess"]["setpoints"][0]["address"]
    dev["mg2_ess"]["measurements"][0]["dtype"] = "int8"
    dev["mg2_ess"]["measurements"][1]["min"] = 5.0
    dev["mg3_ess"]["measurements"][0].pop("feature")
    dev["mg3_ess"]["setpoints"][0]["safe"] = "panic"
    dev["mg3_pv"]["measurements"][0]["feature"] = dev["mg3_pv"]["measurements"][1]["feature"]
    data["port"] = 70000
    with pytest.raises(DataError) as e:
        parse_map(data, "map.yaml")
    msg = str(e.value)
    assert msg.startswith("map.yaml: 9 problem(s)")
    for path in ("devices.mg1_ess.unit_id", "devices.mg1_ess.setpoints[0].max", "devices.mg1_ess.VArPct.address",
                 "devices.mg2_ess.measurements[0].dtype", "devices.mg2_ess.measurements[1].min",
                 "devices.mg3_ess.measurements[0]: expected exactly one of 'feature'",
                 "devices.mg3_ess.setpoints[0].safe",
                 "devices.mg3_pv.W.feature", "port: expected a TCP port"):
        assert path in msg, path
