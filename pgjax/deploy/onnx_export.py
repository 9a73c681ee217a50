"""The exported policy as an ONNX graph (`pgjax export --onnx`), built from the MLP weights.

    session = onnxruntime.InferenceSession("export/MG1.onnx")
    action = session.run(None, {"obs": obs.astype(np.float32)})[0]     # [batch, obs_size] -> [batch, act_size]

The graph computes what `pgjax.deploy.policy.NumpyPolicy` computes, with the constant parts
folded into the first layer: the padding columns (observed as 0, then normalized) and the
agent one-hot add a constant to the first layer's pre-activation, so only the agent's real
observation columns enter the graph:
    x = clip((obs - mean) / sqrt(var + eps), -clip, clip)      (if normalized)
    h = act(x W0[:obs_size] + b0 + c) ... ; action = clip(h W_out[:, :act_size] + b_out, -1, 1)
Opset 20 (the tanh-approximated `Gelu` of flax's `nn.gelu`). Needs the `onnx` package;
`onnxruntime` runs it.
"""

from __future__ import annotations

import numpy as np

OPSET = 20
# activation -> (ONNX op, attributes)
ACTIVATIONS = {"tanh": ("Tanh", {}), "relu": ("Relu", {}), "gelu": ("Gelu", {"approximate": "tanh"})}


def policy_graph(policy, name: str = "policy") -> bytes:
    """The serialized ONNX model of a `NumpyPolicy` (float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    n_obs, n_act = policy.obs_size, policy.act_size
    w0 = policy.kernels[0]
    # constant contribution of the padding columns and the agent one-hot to layer 0
    pad = np.zeros(policy.obs_dim)
    if policy.obs_mean is not None:
        pad = np.clip((pad - policy.obs_mean) / np.sqrt(policy.obs_var + policy.eps), -policy.obs_clip, policy.obs_clip)
    const = pad[n_obs:] @ w0[n_obs:policy.obs_dim]
    if policy.agent_onehot is not None:
        const = const + policy.agent_onehot @ w0[policy.obs_dim:]
    kernels = [w0[:n_obs]] + list(policy.kernels[1:])
    biases = [policy.biases[0] + const] + list(policy.biases[1:])
    kernels[-1], biases[-1] = kernels[-1][:, :n_act], biases[-1][:n_act]

    inits, nodes, x = [], [], "obs"
    if policy.obs_mean is not None:
        inits += [numpy_helper.from_array(f32(policy.obs_mean[:n_obs]), "obs_mean"),
                  numpy_helper.from_array(f32(np.sqrt(policy.obs_var[:n_obs] + policy.eps)), "obs_std"),
                  numpy_helper.from_array(f32(-policy.obs_clip), "obs_lo"),
                  numpy_helper.from_array(f32(policy.obs_clip), "obs_hi")]
        nodes += [helper.make_node("Sub", ["obs", "obs_mean"], ["centered"]),
                  helper.make_node("Div", ["centered", "obs_std"], ["scaled"]),
                  helper.make_node("Clip", ["scaled", "obs_lo", "obs_hi"], ["x0"])]
        x = "x0"
    for k, (w, b) in enumerate(zip(kernels, biases)):
        inits += [numpy_helper.from_array(f32(w), f"W{k}"), numpy_helper.from_array(f32(b), f"b{k}")]
        nodes += [helper.make_node("MatMul", [x, f"W{k}"], [f"z{k}"]),
                  helper.make_node("Add", [f"z{k}", f"b{k}"], [f"a{k}"])]
        x = f"a{k}"
        if k < len(kernels) - 1:
            op, attrs = ACTIVATIONS[policy.activation]
            nodes.append(helper.make_node(op, [x], [f"h{k}"], **attrs))
            x = f"h{k}"
    inits += [numpy_helper.from_array(f32(-1.0), "act_lo"), numpy_helper.from_array(f32(1.0), "act_hi")]
    nodes.append(helper.make_node("Clip", [x, "act_lo", "act_hi"], ["action"]))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", n_obs])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n_act])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pgjax")
    onnx.checker.check_model(model)
    return model.SerializeToString()
