"""Writes the ONNX backend node tests of the installed `onnx` package as files.

`backend-test-tools generate-data` in onnx 1.23 writes only the model tests, so this script
does the same for the node tests (`onnx.backend.test.case.node`), in the usual layout:
DIR/node/test_NAME/model.onnx and test_data_set_K/{input,output}_J.pb (TensorProto).
Inputs and outputs that are not tensors (sequences, maps, optionals) are skipped and the
case is marked with a file `non_tensor_io`, so the runner can say why it is out of scope.

It also writes DIR/schemas.json: every default-domain operator schema of every opset version
(name, since_version, and per attribute its type, whether it is required and its default), which
the importer's attribute test walks.
"""

import json

import os
import sys

import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case.node import collect_testcases


def tensor(value, name):
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(value, name)


def attribute_default(attr):
    """The default as JSON (None when the schema gives none), by attribute type."""
    if not attr.default_value.HasField("type") and not attr.default_value.name:
        return None
    v = onnx.helper.get_attribute_value(attr.default_value)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    if isinstance(v, (int, float, str)):
        return v
    return None  # tensors, graphs: not needed by the test


def write_schemas(path):
    schemas = []
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain not in ("", "ai.onnx"):
            continue
        attrs = {}
        for name, a in s.attributes.items():
            attrs[name] = {
                "type": onnx.defs.OpSchema.AttrType(a.type).name,
                "required": bool(a.required),
                "default": attribute_default(a),
            }
        schemas.append({
            "name": s.name,
            "since_version": s.since_version,
            "min_input": s.min_input,
            "max_input": s.max_input,
            "min_output": s.min_output,
            "max_output": s.max_output,
            "attributes": attrs,
        })
    with open(path, "w") as f:
        json.dump(schemas, f, indent=0, sort_keys=True)


def main(out_dir):
    cases = collect_testcases()
    for case in cases:
        case_dir = os.path.join(out_dir, "node", case.name)
        os.makedirs(case_dir, exist_ok=True)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        graph = case.model.graph
        non_tensor = False
        for k, (inputs, outputs) in enumerate(case.data_sets):
            set_dir = os.path.join(case_dir, f"test_data_set_{k}")
            os.makedirs(set_dir, exist_ok=True)
            for kind, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
                for j, value in enumerate(values):
                    if not infos[j].type.HasField("tensor_type"):
                        non_tensor = True
                        continue
                    with open(os.path.join(set_dir, f"{kind}_{j}.pb"), "wb") as f:
                        f.write(tensor(value, infos[j].name).SerializeToString())
        if non_tensor:
            open(os.path.join(case_dir, "non_tensor_io"), "w").close()
    write_schemas(os.path.join(out_dir, "schemas.json"))
    with open(os.path.join(out_dir, "onnx_version"), "w") as f:
        f.write(onnx.__version__ + "\n")
    print(f"wrote {len(cases)} node tests to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
