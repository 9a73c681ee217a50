"""From a trained policy to Modbus devices.

- `export`: a run folder's actors as a self-contained artifact (safetensors weights, manifest
  with architecture, observation / action schema, control period, content hash);
- `policy`: the exported deterministic policy on numpy alone (no JAX on the edge box);
- `onnx_export`: the same policy as an ONNX graph (`pgjax export --onnx`, for onnxruntime);
- `registers`: Modbus register codecs (int16 / uint16 / int32 / float32 with scale factors);
- `device_map`: the YAML device map (units, registers, limits), generated and validated;
- `plant`: pymodbus TCP server backed by the pgjax environment's physics (`pgjax hil`);
- `runtime`: the asyncio controller with its fail-safes (`pgjax deploy`);
- `plot`: a deployed day next to the simulated one (`pgjax hil --compare --plot`).
"""
